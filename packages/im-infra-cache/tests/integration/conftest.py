"""Fixtures of the cache integration tests: one cache per test and flavour, with a unique prefix.

``cc`` is the cache under test behind :class:`Uniform`, which runs the asyncio flavour's awaitables
on a private event loop, so one test body exercises both the blocking and the asyncio API.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.faultproxy import FaultProxy

_WRAP = (
    cache.Lock,
    cache.AsyncLock,
    cache.Pipeline,
    cache.AsyncPipeline,
    cache.Script,
    cache.Aside,
    cache.AsyncAside,
    cache.Limiter,
    cache.AsyncLimiter,
    cache.Once,
    cache.AsyncOnce,
)


class Uniform:
    """Calls the wrapped object's methods and waits for awaitables on ``loop``."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self._target = target
        self._loop = loop

    def wait(self, value: Any) -> Any:
        if self._loop is not None and inspect.isawaitable(value):
            value = self._loop.run_until_complete(value)
        return Uniform(value, self._loop) if isinstance(value, _WRAP) else value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: self.wait(attr(*a, **kw))

    def __call__(self, *a: Any, **kw: Any) -> Any:
        return self.wait(self._target(*a, **kw))

    @property
    def target(self) -> Any:
        return self._target


def pause(c: Uniform, seconds: float) -> None:
    """Sleep; on the asyncio flavour by running the cache's loop (its background tasks run)."""
    if c._loop is not None:
        c.wait(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def address_of(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"address": f"{parts.hostname}:{parts.port or 6379}", "db": int(parts.path[1:] or 0)}


def unique_service(tag: str = "t") -> str:
    return f"it-cache-{tag}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_cache(redis_url: str, raw: redis.Redis, flavor: str) -> Iterator[Any]:
    """make_cache(**overrides) -> Uniform(cache) of the test's flavour; keys removed at the end."""
    loop = asyncio.new_event_loop() if flavor == "async" else None
    made: list[Any] = []

    def make(service: str | None = None, **overrides: Any) -> Uniform:
        kw = {**address_of(redis_url), **overrides}
        svc = service or unique_service(flavor)
        c = cache.new_async(svc, **kw) if loop else cache.new(svc, **kw)
        made.append(c)
        return Uniform(c, loop)

    yield make
    for c in made:
        prefix = c.key_prefix
        if prefix.startswith("it-cache-"):
            keys = list(raw.scan_iter(match=prefix + "*", count=1000))
            if keys:
                raw.delete(*keys)
        result = c.close()
        if loop is not None:
            loop.run_until_complete(result)
    if loop is not None:
        loop.close()


@pytest.fixture
def cc(make_cache: Any) -> Any:
    """The cache under test (unique prefix)."""
    return make_cache()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the test Redis (latency spikes, cuts after a chosen request)."""
    parts = redis_url.split("//", 1)[1].split("/", 1)[0]
    p = FaultProxy(parts if ":" in parts else parts + ":6379")
    yield p
    p.close()
