"""The concrete caches: :class:`RedisCache` (blocking) and :class:`AsyncRedisCache` (asyncio).

Both inherit every operation from ``_internal.ops.Ops`` / ``_internal.base.CacheBase``; this module
holds only the two I/O drivers (run one command, run a flow) and resource management.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

from im_infra.cache._internal import metrics
from im_infra.cache._internal.args import unencodable
from im_infra.cache._internal.base import CacheBase
from im_infra.cache._internal.codec import Transform
from im_infra.cache._internal.errors import BACKEND_ERRORS, translate
from im_infra.cache._internal.flow import Done, Flow, Runner, Sleep
from im_infra.cache._internal.retry import SAFE, is_safe
from im_infra.cache.errors import CacheError
from im_infra.cache.lock import AsyncLock, Lock
from im_infra.cache.pipeline import AsyncPipeline, Pipeline
from im_infra.clog.lifecycle import AsyncClosing, Closing

if TYPE_CHECKING:
    from im_infra.cache.config import RedisConfig
    from im_infra.cache.serializer import Serializer

__all__ = ["AsyncRedisCache", "RedisCache"]


def _closed(*_args: Any, **_kwargs: Any) -> Any:
    raise CacheError("cache is closed")


async def _aclosed(*_args: Any, **_kwargs: Any) -> Any:
    raise CacheError("cache is closed")


class RedisCache(CacheBase, Closing):
    """Blocking Redis cache; implements the :class:`~im_infra.cache.Cache` protocol.

    Thread-safe (a pool of up to ``pool_size`` connections). Create it with
    :func:`im_infra.cache.new`.
    """

    _lock_class = Lock

    def _run(self, args: tuple[Any, ...], transform: Transform = None, node: Any = None) -> Any:
        """Run one command (on cluster ``node`` when given) and transform its reply."""
        started = perf_counter()
        safe = SAFE.set(True) if is_safe(args) else None
        try:
            reply = (
                self._execute(*args) if node is None else self._execute(*args, target_nodes=node)
            )
        except BACKEND_ERRORS as exc:
            failure = translate(exc, args[0], self._secrets, unsafe=safe is None)
            raise metrics.failed(failure, args[0], started) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(args[0], args, exc) from exc
        finally:
            if safe is not None:
                SAFE.reset(safe)
        metrics.observe(args[0], started)
        return reply if transform is None else transform(reply)

    def _drive(self, flow: Flow[Any]) -> Any:
        runner = Runner(flow, self._secrets)
        step = runner.advance()
        while not isinstance(step, Done):
            reply = error = safe = None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                safe = SAFE.set(True) if is_safe(step.args) else None
                try:
                    reply = self._execute(*step.args)
                except BACKEND_ERRORS as exc:
                    error = exc
                except UnicodeEncodeError as exc:
                    raise unencodable(step.args[0], step.args, exc) from exc
                finally:
                    if safe is not None:
                        SAFE.reset(safe)
            step = runner.advance(reply, error, unsafe=safe is None)
        return step.value

    def scan_iter(self, match: str = "*", count: int | None = None) -> Iterator[str]:
        """Every key matching ``match`` (unprefixed), by SCAN; in cluster mode on each primary."""
        for node in self._scan_nodes():
            cursor = None
            while cursor != 0:
                args = self._scan_args(cursor or 0, match, count)
                cursor, keys = self._run(args, self._unprefix_scan, node)
                yield from keys

    def pipeline(self, transaction: bool = True) -> Pipeline:
        """A pipeline; ``transaction=True`` wraps it in MULTI/EXEC (atomic)."""
        self._check_open()
        return Pipeline(self, self._client.pipeline(transaction=transaction), transaction)

    def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._execute = _closed
            self._client.close()


class AsyncRedisCache(CacheBase, AsyncClosing):
    """asyncio Redis cache (redis.asyncio); implements :class:`~im_infra.cache.AsyncCache`: the
    same methods as the blocking cache, awaitable. Create it with :func:`im_infra.cache.new_async`.
    Use it from one event loop."""

    _lock_class = AsyncLock

    def __init__(
        self, client: Any, *, config: RedisConfig, service: str, serializer: Serializer
    ) -> None:
        super().__init__(client, config=config, service=service, serializer=serializer)
        # At most pool_size commands in flight; the rest wait here (redis.asyncio's own pool
        # would fail them with "Too many connections", its blocking pool is slow).
        self._slots = asyncio.Semaphore(config.pool_size)

    async def _run(
        self, args: tuple[Any, ...], transform: Transform = None, node: Any = None
    ) -> Any:
        """Run one command (on cluster ``node`` when given) and transform its reply."""
        slots = self._slots
        started = perf_counter()
        await slots.acquire()  # (not `async with`: two coroutines fewer on the hot path)
        safe = SAFE.set(True) if is_safe(args) else None
        try:
            if node is None:
                reply = await self._execute(*args)
            else:
                reply = await self._execute(*args, target_nodes=node)
        except BACKEND_ERRORS as exc:
            failure = translate(exc, args[0], self._secrets, unsafe=safe is None)
            raise metrics.failed(failure, args[0], started) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(args[0], args, exc) from exc
        finally:
            slots.release()
            if safe is not None:
                SAFE.reset(safe)
        metrics.observe(args[0], started)
        return reply if transform is None else transform(reply)

    async def _drive(self, flow: Flow[Any]) -> Any:
        runner = Runner(flow, self._secrets)
        step = runner.advance()
        while not isinstance(step, Done):
            reply = error = safe = None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                safe = SAFE.set(True) if is_safe(step.args) else None
                try:
                    async with self._slots:
                        reply = await self._execute(*step.args)
                except BACKEND_ERRORS as exc:
                    error = exc
                except UnicodeEncodeError as exc:
                    raise unencodable(step.args[0], step.args, exc) from exc
                finally:
                    if safe is not None:
                        SAFE.reset(safe)
            step = runner.advance(reply, error, unsafe=safe is None)
        return step.value

    async def scan_iter(self, match: str = "*", count: int | None = None) -> AsyncIterator[str]:
        """Every key matching ``match`` (unprefixed), by SCAN; in cluster mode on each primary."""
        for node in self._scan_nodes():
            cursor = None
            while cursor != 0:
                args = self._scan_args(cursor or 0, match, count)
                cursor, keys = await self._run(args, self._unprefix_scan, node)
                for key in keys:
                    yield key

    def pipeline(self, transaction: bool = True) -> AsyncPipeline:
        """A pipeline; ``transaction=True`` wraps it in MULTI/EXEC (atomic)."""
        self._check_open()
        return AsyncPipeline(self, self._client.pipeline(transaction=transaction), transaction)

    async def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._execute = _aclosed
            await self._client.aclose()
