"""Notifications from the real pipeline: delivered, delivery failed, rolled back, hold set and released,
each received once per event and revision by a webhook server on loopback, reruns included."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from pipeline_harness import delivery_failure_sensor
from pipeline_harness import Pipeline, make_source_repo, settings_for

pytestmark = pytest.mark.docker


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json=http://127.0.0.1:{server.server_port}/hooks/s3cr3t-path", received
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_each_event_is_notified_once(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host,
                                     argocd_for_repo, webhook, monkeypatch) -> None:
    url, received = webhook
    monkeypatch.setenv("COELHO_NOTIFY_WEBHOOKS", url)  # the resource reads it as an EnvVar
    repo = make_source_repo(git_server)
    _, kubeconfig = argocd_for_repo(repo)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(repo, settings_for(repo, f"{registry_addr}/coelho", tmp_path / "work", base_images,
                                               kubeconfig=str(kubeconfig), notify_webhooks=url), instance)
        seed = repo.head()
        assert pipeline.deliver(seed).success
        bad = repo.push({"apps/fastapi/main.py": "print('bad')\n"}, "FastAPI: bad")
        assert pipeline.deliver(bad).success
        assert pipeline.deliver(bad).success  # a rerun: same revision, nothing new to say

        rollback = pipeline.defs.resolve_job_def("rollback")
        assert rollback.execute_in_process(partition_key=seed, instance=instance).success
        assert pipeline.defs.resolve_job_def("release_hold").execute_in_process(instance=instance).success

        template = "k3d/helm/templates/fastapi/deployment.yaml"
        broken = repo.push({template: repo.show("master", template) + "\n{{ .Values.nosuch.key }}\n",
                            "apps/fastapi/main.py": "print('v3')\n"}, "Break the chart")
        failed = pipeline.deliver(broken)
        assert not failed.success
        for _ in range(2):  # the failure sensor sees the same failure twice: one notification
            event = failed.get_run_failure_event()
            context = dg.build_run_status_sensor_context(
                sensor_name="delivery_failure_sensor", dagster_event=event, dagster_instance=instance,
                dagster_run=instance.get_run_by_id(failed.run_id),
                resources={name: pipeline.defs.resources[name] for name in ("notify", "argocd", "verification")},
            ).for_run_failure()
            delivery_failure_sensor(context)

    events = Counter(r["event"] for r in received)
    assert events == {"delivered": 2, "hold_set": 1, "rolled_back": 1, "hold_released": 1, "delivery_failed": 1}
    delivered = [r for r in received if r["event"] == "delivered"]
    assert len({r["revision"] for r in delivered}) == 2  # seed's and bad's manifest commits
    rolled = next(r for r in received if r["event"] == "rolled_back")
    assert rolled["details"]["rolled_back_to"] == seed and rolled["details"]["rolled_back_from"] == bad
    failure = next(r for r in received if r["event"] == "delivery_failed")
    assert failure["source_commit"] == broken and failure["details"]["step"] == "helm_values"
    assert all("s3cr3t-path" not in json.dumps(r) for r in received)
