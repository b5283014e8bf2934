"""The rollout's Kubernetes reads fail with messages that name the object, and never hang."""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s_client

from coelho_pipeline.dev import services
from coelho_pipeline.rollout.workloads import DeploymentState, WorkloadError, WorkloadReader
from git_http import BlackHole


def reader_for(host: str) -> WorkloadReader:
    configuration = k8s_client.Configuration()
    configuration.host = host
    configuration.retries = False
    return WorkloadReader(k8s_client.ApiClient(configuration), request_timeout=(1.0, 0.5))


DEPLOYMENT = DeploymentState("coelho-realtime", "coelho-realtime-fastapi", 1, 1, 1, 1, 1, 1, 1,
                             {"app.kubernetes.io/component": "fastapi"}, None)


@pytest.mark.parametrize("read", [
    lambda r: r.deployment("coelho-realtime", "coelho-realtime-fastapi"),
    lambda r: r.restarts(DEPLOYMENT),
])
def test_a_hung_api_is_a_transient_error_naming_the_object_and_the_bound(read) -> None:
    with BlackHole() as hole:
        started = time.monotonic()
        with pytest.raises(WorkloadError) as info:
            read(reader_for(f"http://{hole.address}"))
    assert info.value.transient is True
    assert "coelho-realtime/coelho-realtime-fastapi" in str(info.value) and "0.5s read timeout" in str(info.value)
    assert time.monotonic() - started < 10


def test_an_unreachable_api_is_transient() -> None:
    with pytest.raises(WorkloadError) as info:
        reader_for(f"http://127.0.0.1:{services.free_port()}").deployment("ns", "api")
    assert info.value.transient is True
    assert "cannot reach the Kubernetes API to get Deployment ns/api" in str(info.value)
