"""Instant PromQL queries through Prometheus's HTTP API (``GET /api/v1/query``), with timeouts.

A result is every series' value at the evaluation time. No series, or only NaN, means the query
cannot judge anything (an exporter not scraped yet, a rate over no requests): the caller says
"inconclusive" rather than reading it as a pass or a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import requests

from coelho_pipeline.errors import PipelineError, http_status_is_transient

# (connect, read) seconds: an instant query over a soak window's data answers in milliseconds.
DEFAULT_TIMEOUT: tuple[float, float] = (3.0, 10.0)


class PrometheusError(PipelineError):
    """Prometheus could not answer a query; the message names the URL (without credentials) and the query."""


@dataclass(frozen=True)
class Series:
    labels: str  # e.g. '{job="fastapi"}'; '' for a scalar
    value: float  # may be NaN


@dataclass(frozen=True)
class QueryResult:
    query: str
    series: tuple[Series, ...]

    @property
    def numbers(self) -> tuple[Series, ...]:
        """The series with a usable value (not NaN)."""
        return tuple(s for s in self.series if not math.isnan(s.value))

    @property
    def empty_reason(self) -> str | None:
        """Why this result cannot judge anything, or None when it has at least one number."""
        if not self.series:
            return "no series"
        if not self.numbers:
            return "NaN"
        return None


class PrometheusClient:
    """One Prometheus server. ``url`` is its base, e.g. ``http://prometheus.monitoring:9090``."""

    def __init__(self, url: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def query(self, promql: str) -> QueryResult:
        """Evaluates ``promql`` now.

        Raises:
            PrometheusError: unreachable, timed out or 5xx (transient); a query Prometheus rejects
                (bad_data, HTTP 400/422) is terminal and the message quotes Prometheus's reason.
        """
        endpoint = f"{self.url}/api/v1/query"
        try:
            response = self._session.get(endpoint, params={"query": promql}, timeout=self.timeout)
        except requests.Timeout as e:
            phase, bound = ("connect", self.timeout[0]) if isinstance(e, requests.ConnectTimeout) \
                else ("read", self.timeout[1])
            raise PrometheusError(f"Prometheus at {self.url} did not answer the query {promql!r} within the "
                                  f"{bound:g}s {phase} timeout", transient=True) from e
        except requests.RequestException as e:
            raise PrometheusError(f"cannot reach Prometheus at {self.url} for the query {promql!r}: "
                                  f"{type(e).__name__}", transient=True) from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            reason = body.get("error") if isinstance(body, dict) else None
            detail = f": {str(reason)[:300]}" if reason else ""
            raise PrometheusError(
                f"Prometheus at {self.url} refused the query {promql!r} (HTTP {response.status_code}){detail}",
                transient=http_status_is_transient(response.status_code) and response.status_code != 200)
        data = body.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar" and isinstance(result, list) and len(result) == 2:
            return QueryResult(promql, (Series("", _number(result[1])),))
        if kind == "vector" and isinstance(result, list):
            return QueryResult(promql, tuple(
                Series(_labels(item.get("metric") or {}), _number((item.get("value") or [0, "NaN"])[1]))
                for item in result if isinstance(item, dict)))
        # A range vector (``x[5m]``) or a string has no single value to compare with a bound.
        raise PrometheusError(f"the query {promql!r} gives a {kind or 'malformed'} result, not an instant vector or "
                              "a scalar: wrap it, e.g. max_over_time(...) or rate(...)", transient=False)


def _number(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return math.nan


def _labels(metric: dict) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return "{" + inner + "}"
