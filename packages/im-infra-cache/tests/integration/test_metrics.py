"""cache metrics against a real Redis, blocking and asyncio: a known workload, exact deltas.

Values are cumulative for the whole test session (one SDK MeterProvider) and not per cache, so
every assertion compares before/after a workload of this test alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from im_infra import cache
from im_infra.cache._internal import metrics as cache_metrics

pytestmark = pytest.mark.integration

OPS = "im_infra.cache.operations"
ERRORS = "im_infra.cache.errors"
DURATION = "im_infra.cache.operation.duration"

Snapshot = Callable[[], dict[str, float]]


@pytest.fixture
def every_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every duration (no sampling), so counts can be compared exactly."""
    monkeypatch.setattr(cache_metrics, "DURATION_SAMPLE_INTERVAL_S", 0.0)


def snapshot(probe: Any, *commands: str) -> Snapshot:
    """A function returning, per command, operations / errors / duration recordings."""

    def take() -> dict[str, float]:
        values: dict[str, float] = {}
        for c in commands:
            values[f"ops:{c}"] = probe.value(OPS, command=c)
            values[f"errors:{c}"] = probe.value(ERRORS, command=c)
            values[f"durations:{c}"] = probe.count(DURATION, command=c)
        return values

    return take


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def test_commands_and_errors(metrics_probe: Any, cc: Any, every_duration: None) -> None:
    take = snapshot(metrics_probe, "get", "set", "incrby")
    typed = metrics_probe.value(ERRORS, command="incrby", **{"error.type": "CacheResponseError"})
    before = take()
    cc.set("k", "not a number")
    for _ in range(5):
        assert cc.get("k") == "not a number"
    for _ in range(2):
        with pytest.raises(cache.CacheResponseError):
            cc.incr("k")
    assert delta(before, take()) == {
        "ops:get": 5,
        "durations:get": 5,
        "ops:set": 1,
        "durations:set": 1,
        "ops:incrby": 2,
        "durations:incrby": 2,
        "errors:incrby": 2,
    }
    assert (
        metrics_probe.value(ERRORS, command="incrby", **{"error.type": "CacheResponseError"})
        - typed
        == 2
    )


def test_pipeline_counts_once_and_watch_reads(
    metrics_probe: Any, cc: Any, every_duration: None
) -> None:
    take = snapshot(metrics_probe, "pipeline", "set", "get", "watch")
    cc.set("counter", "1")
    before = take()
    p = cc.pipeline(transaction=False)
    for i in range(3):
        p.set(f"p{i}", i)
    assert p.execute() == [True, True, True]
    p = cc.pipeline()
    p.watch("counter")
    assert p.get("counter") == "1"  # runs at once: WATCH mode
    p.multi()
    p.set("counter", "2")
    assert p.execute() == [True]
    assert delta(before, take()) == {
        "ops:pipeline": 2,
        "durations:pipeline": 2,
        "ops:watch": 1,
        "durations:watch": 1,
        "ops:get": 1,
        "durations:get": 1,
    }


def test_script_flow_steps(metrics_probe: Any, cc: Any, every_duration: None) -> None:
    # A script the server has never seen: EVALSHA → NOSCRIPT (handled) → SCRIPT LOAD → EVALSHA.
    script = cc.register_script(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")
    take = snapshot(metrics_probe, "evalsha", "script load")
    before = take()
    assert cc.wait(script.target(args=["a"])) == "a"
    assert cc.wait(script.target(args=["b"])) == "b"
    assert delta(before, take()) == {
        "ops:evalsha": 3,
        "durations:evalsha": 3,
        "ops:script load": 1,
        "durations:script load": 1,
    }


def test_unreachable_server_errors(
    metrics_probe: Any, make_cache: Any, every_duration: None
) -> None:
    dead = make_cache(address="127.0.0.1:1", retry={"max_retries": 0}, connect_timeout=1)
    unavailable = {"command": "get", "error.type": "CacheUnavailable"}
    before = metrics_probe.value(ERRORS, **unavailable), metrics_probe.value(OPS, command="get")
    for _ in range(2):
        with pytest.raises(cache.CacheUnavailable):
            dead.get("k")
    after = metrics_probe.value(ERRORS, **unavailable), metrics_probe.value(OPS, command="get")
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)


def test_durations_are_sampled_but_counts_are_exact(metrics_probe: Any, cc: Any) -> None:
    """With the default interval a burst records at most one duration per millisecond,
    while the operation count stays exact."""
    take = snapshot(metrics_probe, "get")
    before = take()
    started = time.perf_counter()
    for _ in range(300):
        cc.get("sampled")
    elapsed_ms = (time.perf_counter() - started) * 1000
    d = delta(before, take())
    assert d["ops:get"] == 300
    assert 1 <= d["durations:get"] <= int(elapsed_ms) + 2


def test_hot_path_features_report_metrics(make_cache: Any, metrics_probe: Any) -> None:
    """Client-side cache hits/misses, limiter decisions, aside loads and once claims: exact
    deltas of a known workload."""
    c = make_cache(local_cache={"prefixes": ["user:"]})
    service = c.service

    def local(name: str) -> float:
        return float(metrics_probe.value(f"im_infra.cache.local.{name}", service=service))

    c.set("user:1", "ann")
    c.set("user:2", "bob")  # written before tracking is on: no invalidation can race the fill
    c.get("user:1")
    deadline = time.monotonic() + 5
    while not c.local_cache.enabled:
        assert time.monotonic() < deadline
        c.get("user:1")  # (this loop may fill user:1 locally; user:2 is never read before)
    before = (local("hits"), local("misses"))
    c.get("user:2")  # fill
    for _ in range(5):
        c.get("user:2")
    assert local("hits") - before[0] == 5
    assert local("misses") - before[1] == 1

    name = f"m-{uuid.uuid4().hex[:8]}"
    limiter = c.limiter(name, cache.SlidingWindow(limit=2, window=10))
    for _ in range(3):
        limiter.allow("u")
    decisions = "im_infra.cache.ratelimit.decisions"
    assert metrics_probe.value(decisions, limiter=name, allowed="true") == 2
    assert metrics_probe.value(decisions, limiter=name, allowed="false") == 1

    loads = metrics_probe.value("im_infra.cache.aside.loads", result="value")
    c.aside().get("k", lambda: 1)
    c.aside().get("k", lambda: 2)
    assert metrics_probe.value("im_infra.cache.aside.loads", result="value") - loads == 1

    done = metrics_probe.value("im_infra.cache.once.claims", state="done")
    c.once("n").run("k", lambda: 1)
    c.once("n").run("k", lambda: 1)
    assert metrics_probe.value("im_infra.cache.once.claims", state="done") - done == 1
