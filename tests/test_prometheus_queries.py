"""PromQL through a real Prometheus (Debian's package) scraping a loopback exporter every second."""

from __future__ import annotations

import math
import time

import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.rollout.prometheus import PrometheusClient, PrometheusError
from git_http import BlackHole


def scraped(client: PrometheusClient, promql: str, predicate, timeout: float = 20.0):
    """The query's result once ``predicate`` holds on it (Prometheus needs a scrape to see a change)."""
    deadline = time.monotonic() + timeout
    while True:
        result = client.query(promql)
        if predicate(result):
            return result
        assert time.monotonic() < deadline, f"{promql}: still {result} after {timeout}s"
        time.sleep(0.3)


def test_an_instant_query_returns_every_series_value(prometheus) -> None:
    url, exporter = prometheus
    exporter.set("coelho_test_error_ratio", 0.25)
    client = PrometheusClient(url)
    result = scraped(client, "coelho_test_error_ratio", lambda r: r.numbers and r.numbers[0].value == 0.25)
    assert result.empty_reason is None
    assert 'job="app"' in result.numbers[0].labels
    scalar = client.query("scalar(coelho_test_error_ratio) * 2")
    assert [s.value for s in scalar.series] == [0.5]


def test_no_series_and_nan_say_why_they_cannot_judge(prometheus) -> None:
    url, exporter = prometheus
    client = PrometheusClient(url)
    assert client.query("coelho_metric_nobody_exports").empty_reason == "no series"
    exporter.set("coelho_test_nan", math.nan)
    result = scraped(client, "coelho_test_nan", lambda r: bool(r.series))
    assert result.empty_reason == "NaN"


def test_a_query_prometheus_rejects_is_terminal_and_quotes_the_reason(prometheus) -> None:
    url, _ = prometheus
    with pytest.raises(PrometheusError) as info:
        PrometheusClient(url).query("sum(rate(x[1m])")
    assert info.value.transient is False
    assert "sum(rate(x[1m])" in str(info.value) and "HTTP 400" in str(info.value) and "parse error" in str(info.value)


def test_an_unreachable_prometheus_is_transient() -> None:
    url = f"http://127.0.0.1:{services.free_port()}"
    with pytest.raises(PrometheusError) as info:
        PrometheusClient(url, timeout=(1.0, 1.0)).query("up")
    assert info.value.transient is True and url in str(info.value)


def test_a_prometheus_that_never_answers_times_out_transiently() -> None:
    with BlackHole() as hole:  # accepts connections and never answers
        started = time.monotonic()
        with pytest.raises(PrometheusError) as info:
            PrometheusClient(f"http://{hole.address}", timeout=(1.0, 0.5)).query("up")
    assert info.value.transient is True and "did not answer" in str(info.value)
    assert time.monotonic() - started < 10


def test_a_range_vector_cannot_be_compared_with_a_bound(prometheus) -> None:
    url, _ = prometheus
    with pytest.raises(PrometheusError) as info:
        PrometheusClient(url).query("up[1m]")
    assert info.value.transient is False and "gives a matrix result" in str(info.value)
