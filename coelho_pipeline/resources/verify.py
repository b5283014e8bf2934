"""What happens after Argo CD says Synced and Healthy: the rollout verification and auto-rollback."""

from __future__ import annotations

import dagster as dg

from coelho_pipeline.rollout.prometheus import PrometheusClient
from coelho_pipeline.rollout.verify import MetricCheck, VerifyPolicy


class MetricCheckConfig(dg.Config):
    """One PromQL query and its bounds (COELHO_VERIFY_QUERIES entry)."""

    name: str
    query: str
    min: float | None = None
    max: float | None = None


class VerificationResource(dg.ConfigurableResource):
    """Wired from COELHO_PROMETHEUS_URL, COELHO_VERIFY_QUERIES, COELHO_ROLLOUT_TIMEOUT,
    COELHO_VERIFY_SOAK_SECONDS, COELHO_VERIFY_INTERVAL_SECONDS and COELHO_AUTO_ROLLBACK."""

    prometheus_url: str | None = None
    checks: list[MetricCheckConfig] = []
    rollout_timeout_seconds: float = 300.0
    soak_seconds: float = 60.0
    interval_seconds: float = 10.0
    # Opt-in: a delivery whose sync fails, turns Degraded or fails verification is rolled back.
    auto_rollback: bool = False

    def policy(self) -> VerifyPolicy:
        return VerifyPolicy(
            rollout_timeout=self.rollout_timeout_seconds, soak_seconds=self.soak_seconds,
            interval_seconds=self.interval_seconds,
            checks=tuple(MetricCheck(c.name, c.query, c.min, c.max) for c in self.checks),
        )

    def prometheus(self) -> PrometheusClient | None:
        return PrometheusClient(self.prometheus_url) if self.prometheus_url else None
