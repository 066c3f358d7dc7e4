"""The metrics' cached children."""

from __future__ import annotations

from chatcompat import metrics


def test_a_child_is_the_metrics_own_and_looked_up_once():
    first = metrics.child(metrics.REQUESTS, "/v1/test-child", "200")
    assert first is metrics.REQUESTS.labels("/v1/test-child", "200")
    assert metrics.child(metrics.REQUESTS, "/v1/test-child", "200") is first
    before = first._value.get()
    metrics.child(metrics.REQUESTS, "/v1/test-child", "200").inc()
    assert metrics.REQUESTS.labels("/v1/test-child", "200")._value.get() == before + 1
    assert metrics.child(metrics.RUNS, "a", "chat", None) is metrics.RUNS.labels(
        "a", "chat", "None"
    )
