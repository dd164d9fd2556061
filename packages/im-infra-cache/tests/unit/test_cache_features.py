"""The hot-path features' pure logic (no server): config sections, the local fallback limiter,
the client-side cache's store and tracking protocol, single flight, cache-aside entries."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import ValidationError

from im_infra.cache import RedisConfig, SlidingWindow, TokenBucket
from im_infra.cache._internal.flow import Cmd, Sleep
from im_infra.cache._internal.local_limit import LocalLimiter
from im_infra.cache._internal.singleflight import TaskFlights, ThreadFlights
from im_infra.cache._internal.tracking import CHANNEL, Connect, Recv, Send, Tracker, tracking_flow
from im_infra.cache.aside import decode_entry, encode_entry
from im_infra.cache.errors import SerializationError
from im_infra.cache.features import LocalCacheConfig
from im_infra.cache.local import MISS, LocalCache


# ------------------------------------------------------------------ config
def test_feature_sections_parse_from_camel_case_yaml_fields() -> None:
    cfg = RedisConfig.model_validate(
        {
            "aside": {"ttl": "5m", "notFoundTtl": "30s", "staleTtl": "1m", "lock": True},
            "localCache": {"prefixes": ["user:"], "maxEntries": 100, "maxAge": "10s"},
            "rateLimit": {
                "fallback": "deny",
                "limits": {
                    "send": {"algorithm": "token_bucket", "rate": 10, "burst": 20},
                    "login": {"algorithm": "sliding_window", "limit": 5, "window": "1m"},
                },
            },
            "once": {"inProgressTtl": "30s", "doneTtl": "24h"},
        }
    )
    assert (cfg.aside.ttl, cfg.aside.not_found_ttl, cfg.aside.stale_ttl) == (300, 30, 60)
    assert cfg.local_cache.prefixes == ["user:"] and cfg.local_cache.max_age == 10
    assert cfg.rate_limit.limits["send"] == TokenBucket(rate=10, burst=20)
    assert cfg.rate_limit.limits["login"] == SlidingWindow(limit=5, window=60)
    assert cfg.once.done_ttl == 86400
    assert RedisConfig().local_cache.prefixes == []  # off by default


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"aside": {"jitter": 1.0}}, "aside.jitter"),
        ({"rateLimit": {"fallback": "maybe"}}, "rateLimit.fallback"),
        ({"rateLimit": {"limits": {"x": {"algorithm": "leaky"}}}}, "rateLimit.limits.x"),
        (
            {
                "rateLimit": {
                    "limits": {"x": {"algorithm": "sliding_window", "limit": 0, "window": 1}}
                }
            },
            "limit",
        ),
        ({"once": {"inProgressTtl": 0}}, "once.inProgressTtl"),
        ({"localCache": {"maxEntries": 0}}, "localCache.maxEntries"),
        ({"localCache": {"prefixes": ["user:", "user:1"]}}, "overlap"),
        ({"mode": "sentinel", "localCache": {"prefixes": ["u:"]}}, "localCache"),
    ],
)
def test_bad_feature_config_names_the_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        RedisConfig.model_validate(doc)
    assert where in str(info.value)


# ------------------------------------------------------------------ local fallback limiter
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter() -> tuple[LocalLimiter, Clock]:
    lim = LocalLimiter(max_keys=3)
    clock = Clock()
    lim._now = clock
    return lim, clock


def test_local_token_bucket() -> None:
    lim, clock = limiter()
    spec = TokenBucket(rate=2, burst=3)
    assert [lim.allow(spec, "u", 1)[0] for _ in range(4)] == [True, True, True, False]
    allowed, remaining, retry = lim.allow(spec, "u", 1)
    assert (allowed, remaining) == (False, 0) and retry == pytest.approx(0.5)
    clock.now += 0.5
    assert lim.allow(spec, "u", 1)[0] is True
    clock.now += 100
    assert lim.allow(spec, "u", 1)[1] == 2  # refilled to the burst, not beyond


def test_local_sliding_window() -> None:
    lim, clock = limiter()
    spec = SlidingWindow(limit=2, window=10)
    assert lim.allow(spec, "u", 1) == (True, 1, 0.0)
    clock.now += 4
    assert lim.allow(spec, "u", 1) == (True, 0, 0.0)
    allowed, remaining, retry = lim.allow(spec, "u", 1)
    assert (allowed, remaining) == (False, 0) and retry == pytest.approx(6)
    clock.now += 6  # the first call leaves the window
    assert lim.allow(spec, "u", 1)[0] is True
    assert lim.allow(spec, "u", 1)[0] is False


def test_local_limiter_forgets_least_recently_used_keys() -> None:
    lim, _ = limiter()
    spec = SlidingWindow(limit=1, window=100)
    for key in ("a", "b", "c", "d"):
        assert lim.allow(spec, key, 1)[0] is True
    assert lim.allow(spec, "d", 1)[0] is False  # remembered
    assert lim.allow(spec, "a", 1)[0] is True  # forgotten (only 3 keys are kept)


# ------------------------------------------------------------------ client-side cache store
def store(**kw: Any) -> LocalCache:
    s = LocalCache(LocalCacheConfig(prefixes=["user:"], **kw), "svc:", "svc")
    s.flush(enabled=True)
    return s


def test_store_fill_hit_and_coverage() -> None:
    s = store()
    assert s.covers("svc:user:1") and not s.covers("svc:group:1") and not s.covers("user:1")
    assert s.lookup("svc:user:1") is MISS
    token = s.begin("svc:user:1")
    assert token is not None
    s.put("svc:user:1", token, b"ann")
    assert s.lookup("svc:user:1") == b"ann"
    assert (s.hits, s.misses) == (1, 1)


def test_an_invalidation_during_a_fill_prevents_storing_the_old_reply() -> None:
    s = store()
    token = s.begin("svc:user:1")
    assert token is not None
    s.invalidate(["svc:user:1"])  # the key changed while our GET was in flight
    s.put("svc:user:1", token, b"old")
    assert s.lookup("svc:user:1") is MISS


def test_a_flush_during_a_fill_prevents_storing_and_disabled_stores_nothing() -> None:
    s = store()
    token = s.begin("svc:user:1")
    assert token is not None
    s.flush(enabled=False)
    s.put("svc:user:1", token, b"old")
    assert s.lookup("svc:user:1") is MISS
    assert s.begin("svc:user:1") is None


def test_entries_expire_after_max_age_and_lru_evicts() -> None:
    s = store(max_age=0.05, max_entries=2)
    for key in ("svc:user:1", "svc:user:2"):
        token = s.begin(key)
        assert token is not None
        s.put(key, token, b"v")
    s.lookup("svc:user:1")  # 1 is now the most recent
    token = s.begin("svc:user:3")
    assert token is not None
    s.put("svc:user:3", token, b"v")
    assert s.lookup("svc:user:2") is MISS and s.evictions == 1
    assert s.lookup("svc:user:1") == b"v"
    time.sleep(0.06)
    assert s.lookup("svc:user:1") is MISS


def test_write_arguments_invalidate_covered_keys_only() -> None:
    s = store()
    for key in ("svc:user:1", "svc:user:2"):
        token = s.begin(key)
        assert token is not None
        s.put(key, token, b"v")
    s.invalidate_args(("MSET", "svc:user:1", "x", "svc:group:1", "y"))
    assert s.lookup("svc:user:1") is MISS
    assert s.lookup("svc:user:2") == b"v"


# ------------------------------------------------------------------ tracking protocol
def test_tracking_flow_handshake_invalidations_ping_and_loss() -> None:
    s = LocalCache(LocalCacheConfig(prefixes=["user:", "group:"]), "svc:", "svc")
    tracker = Tracker(s, ping_interval=1.0, reply_timeout=1.0)
    flow = tracking_flow(tracker)
    assert isinstance(next(flow), Connect)
    assert flow.send(None) == Cmd(("CLIENT", "ID"))
    tracking = flow.send(42)
    assert tracking == Cmd(
        (
            "CLIENT", "TRACKING", "ON", "REDIRECT", 42, "BCAST",
            "PREFIX", "svc:group:", "PREFIX", "svc:user:",
        )
    )  # fmt: skip
    assert flow.send(b"OK") == Cmd(("SUBSCRIBE", CHANNEL))
    assert not s.enabled
    assert flow.send([b"subscribe", CHANNEL, 1]) == Recv(1.0)
    assert s.enabled and tracker.connected.is_set()
    token = s.begin("svc:user:1")
    assert token is not None
    s.put("svc:user:1", token, b"v")
    assert flow.send([b"message", CHANNEL, [b"svc:user:1"]]) == Recv(1.0)
    assert s.lookup("svc:user:1") is MISS
    assert flow.send(None) == Send(("PING",))  # idle: PING
    assert flow.send(None) == Recv(1.0)
    assert flow.send([b"pong", b""]) == Recv(1.0)  # answered: alive
    token = s.begin("svc:user:2")
    assert token is not None
    s.put("svc:user:2", token, b"v")
    assert flow.send(None) == Send(("PING",))
    assert flow.send(None) == Recv(1.0)
    step = flow.send(None)  # no PONG within the interval: lost
    assert isinstance(step, Sleep)
    assert not s.enabled and len(s) == 0 and not tracker.connected.is_set()
    assert isinstance(flow.send(None), Connect)  # and reconnects
    step = flow.throw(ConnectionError("refused"))
    assert isinstance(step, Sleep) and step.seconds > 0.05  # backing off
    tracker.stopped = True
    with pytest.raises(StopIteration):
        flow.send(None)


def test_flushdb_message_empties_the_store() -> None:
    s = LocalCache(LocalCacheConfig(prefixes=["user:"]), "svc:", "svc")
    tracker = Tracker(s, 1.0, 1.0)
    flow = tracking_flow(tracker)
    next(flow)
    flow.send(None)
    flow.send(1)
    flow.send(b"OK")
    flow.send([b"subscribe", CHANNEL, 1])
    token = s.begin("svc:user:1")
    assert token is not None
    s.put("svc:user:1", token, b"v")
    flow.send([b"message", CHANNEL, None])
    assert len(s) == 0 and s.enabled


# ------------------------------------------------------------------ single flight
def test_thread_flights_share_one_call_and_its_exception() -> None:
    flights = ThreadFlights()
    calls = 0
    gate = threading.Event()

    def slow() -> int:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return 7

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(flights.run("k", slow))) for _ in range(20)
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert calls == 1 and results == [7] * 20 and len(flights) == 0

    def boom() -> int:
        raise KeyError("x")

    with pytest.raises(KeyError):
        flights.run("k", boom)
    assert len(flights) == 0


def test_task_flights_share_one_task() -> None:
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "v"

    async def main() -> list[Any]:
        flights = TaskFlights()
        out = await asyncio.gather(*(flights.run("k", work) for _ in range(50)))
        assert len(flights) == 0
        return out

    assert asyncio.run(main()) == ["v"] * 50
    assert calls == 1


# ------------------------------------------------------------------ cache-aside entries
def test_aside_entries_round_trip_and_foreign_values_are_rejected() -> None:
    raw = encode_entry(b"v", 1234567890123, b'{"a":1}')
    assert decode_entry(raw) == (b"v", 1234567890123, b'{"a":1}')
    assert decode_entry(encode_entry(b"n", 5, b"")) == (b"n", 5, b"")
    with pytest.raises(SerializationError):
        decode_entry(b'{"a":1}')
