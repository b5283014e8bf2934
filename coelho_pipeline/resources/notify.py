"""Webhook notifications as a Dagster resource: what happened, sent once per event and revision."""

from __future__ import annotations

import dagster as dg

from coelho_pipeline.notify import FileSentLog, MemorySentLog, Notification, Notifier, parse_webhooks


class NotifierResource(dg.ConfigurableResource):
    """The webhooks of COELHO_NOTIFY_WEBHOOKS (an EnvVar: their URLs carry tokens) and where sent
    notifications are remembered. No webhooks: nothing is sent."""

    webhooks: str | None = None
    state_dir: str = ""

    def notifier(self) -> Notifier:
        if not self.webhooks:
            return Notifier((), MemorySentLog())
        return Notifier(parse_webhooks(self.webhooks), FileSentLog(self.state_dir))

    def send(self, log: dg.DagsterLogManager, notification: Notification) -> None:
        """Sends and logs each webhook's outcome; a webhook that fails never fails what it reports on."""
        for result in self.notifier().send(notification):
            line = f"notification {notification.event.value} to {result.webhook}: {result.outcome.value}"
            if result.ok:
                log.info(line)
            else:
                log.warning(f"{line} ({result.reason})")
