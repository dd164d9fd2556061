"""The concrete caches: :class:`RedisCache` (blocking) and :class:`AsyncRedisCache` (asyncio).

Both inherit every operation from ``_internal.ops.Ops`` / ``_internal.base.CacheBase``; this module
holds only the two I/O drivers (run one command, run a flow) and resource management.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

from im_infra.cache._internal import metrics
from im_infra.cache._internal.args import unencodable
from im_infra.cache._internal.backend import ASYNC, SYNC
from im_infra.cache._internal.base import CacheBase
from im_infra.cache._internal.codec import Transform
from im_infra.cache._internal.errors import BACKEND_ERRORS, translate
from im_infra.cache._internal.flow import Call, Done, Flow, Runner, Sleep
from im_infra.cache._internal.retry import SAFE, is_safe
from im_infra.cache._internal.singleflight import TaskFlights, ThreadFlights
from im_infra.cache._internal.slots import Slots
from im_infra.cache._internal.tracking import run_async, run_blocking, tracking_connection
from im_infra.cache.aside import Aside, AsyncAside
from im_infra.cache.errors import CacheError
from im_infra.cache.lock import AsyncLock, Lock
from im_infra.cache.once import AsyncOnce, Once
from im_infra.cache.pipeline import AsyncPipeline, Pipeline
from im_infra.cache.ratelimit import AsyncLimiter, Limiter
from im_infra.clog.lifecycle import AsyncClosing, Closing

if TYPE_CHECKING:
    from im_infra.cache.config import RedisConfig
    from im_infra.cache.serializer import Serializer

__all__ = ["AsyncRedisCache", "RedisCache"]


def _closed(*_args: Any, **_kwargs: Any) -> Any:
    raise CacheError("cache is closed")


async def _aclosed(*_args: Any, **_kwargs: Any) -> Any:
    raise CacheError("cache is closed")


def _discard(awaitable: Any) -> None:
    """Close a coroutine a blocking caller cannot run (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


class RedisCache(CacheBase[Lock, Aside, Limiter, Once], Closing):
    """Blocking Redis cache; implements the :class:`~im_infra.cache.Cache` protocol.

    Thread-safe (a pool of up to ``pool_size`` connections). Create it with
    :func:`im_infra.cache.new`.
    """

    _mode: Literal["blocking"]  # (typing only: how commands are typed, _internal/command.py)
    _lock_class = Lock
    _aside_class = Aside
    _limiter_class = Limiter
    _once_class = Once

    def __init__(
        self, client: Any, *, config: RedisConfig, service: str, serializer: Serializer
    ) -> None:
        super().__init__(client, config=config, service=service, serializer=serializer)
        self._flights = ThreadFlights()
        # background work (stale refreshes, retried invalidations): one thread, started on use
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="im-infra-cache")
        self._tracking: threading.Thread | None = None
        self._tracking_lock = threading.Lock()

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
            elif isinstance(step, Call):
                try:
                    reply = step.fn()
                    if inspect.isawaitable(reply):
                        _discard(reply)
                        raise CacheError(
                            "the function returned an awaitable: use the asyncio cache "
                            "(cache.new_async) with async loaders and handlers"
                        )
                except Exception as exc:
                    error = exc
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

    def _ready(self, value: Any) -> Any:
        return value

    def _attempt(
        self,
        args: tuple[Any, ...],
        transform: Callable[[Any], Any],
        recover: Callable[[BaseException, tuple[Any, ...]], Flow[Any] | None],
        context: tuple[Any, ...] = (),
    ) -> Any:
        try:
            return self._run(args, transform)
        except CacheError as exc:
            flow = None if exc.__cause__ is None else recover(exc.__cause__, context)
            if flow is None:
                raise
        return self._drive(flow)

    def _start_tracking(self) -> None:
        if self._tracking is not None or self._tracker is None:
            return
        with self._tracking_lock:
            if self._tracking is None and not self._closed:
                connect = partial(tracking_connection, self._config, SYNC)
                self._tracking = threading.Thread(
                    target=run_blocking,
                    args=(self._tracker, connect),
                    name="im-infra-cache-tracking",
                    daemon=True,
                )
                self._tracking.start()

    def _run_tracked(
        self, args: tuple[Any, ...], transform: Transform = None, node: Any = None
    ) -> Any:
        local = self._local
        assert local is not None
        local.invalidate_args(args)
        try:
            return RedisCache._run(self, args, transform, node)
        finally:
            local.invalidate_args(args)

    def _close_features(self) -> None:
        if self._tracker is not None:
            self._tracker.stopped = True

    def _single(self, key: str, make: Callable[[], Flow[Any]]) -> Any:
        """Run ``make()``'s flow once for all threads asking for ``key`` at the same time."""
        return self._flights.run(key, lambda: self._drive(make()))

    def _spawn(self, flow: Flow[Any]) -> None:
        """Run ``flow`` in the background (the cache's one worker thread; errors are the flow's
        to report)."""
        if self._closed:
            flow.close()
            return
        self._worker.submit(contextvars.copy_context().run, self._drive, flow)

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
        """Close every pooled connection (idempotent); background work still queued is dropped."""
        if not self._closed:
            self._closed = True
            self._close_features()
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._execute = _closed
            self._client.close()


class AsyncRedisCache(CacheBase[AsyncLock, AsyncAside, AsyncLimiter, AsyncOnce], AsyncClosing):
    """asyncio Redis cache (redis.asyncio); implements :class:`~im_infra.cache.AsyncCache`: the
    same methods as the blocking cache, awaitable. Create it with :func:`im_infra.cache.new_async`.
    Use it from one event loop."""

    _mode: Literal["asyncio"]  # (typing only: how commands are typed, _internal/command.py)
    _lock_class = AsyncLock
    _aside_class = AsyncAside
    _limiter_class = AsyncLimiter
    _once_class = AsyncOnce

    def __init__(
        self, client: Any, *, config: RedisConfig, service: str, serializer: Serializer
    ) -> None:
        super().__init__(client, config=config, service=service, serializer=serializer)
        # At most pool_size commands in flight; the rest wait here (redis.asyncio's own pool
        # would fail them with "Too many connections", its blocking pool is slow).
        self._slots = Slots(config.pool_size)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._flights = TaskFlights()
        self._tracking: asyncio.Future[None] | None = None

    async def _run(  # type: ignore[override]  # (its Reply[T] is a coroutine of T)
        self, args: tuple[Any, ...], transform: Transform = None, node: Any = None
    ) -> Any:
        """Run one command (on cluster ``node`` when given) and transform its reply."""
        slots = self._slots
        started = perf_counter()
        if not slots.take():  # (a free slot costs no coroutine: the hot path)
            await slots.wait()
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

    async def _drive(self, flow: Flow[Any]) -> Any:  # type: ignore[override]  # (a coroutine)
        runner = Runner(flow, self._secrets)
        step = runner.advance()
        while not isinstance(step, Done):
            reply = error = safe = None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Call):
                try:
                    reply = step.fn()
                    if inspect.isawaitable(reply):
                        reply = await reply
                except Exception as exc:
                    error = exc
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

    async def _ready(self, value: Any) -> Any:
        return value

    async def _attempt(
        self,
        args: tuple[Any, ...],
        transform: Callable[[Any], Any],
        recover: Callable[[BaseException, tuple[Any, ...]], Flow[Any] | None],
        context: tuple[Any, ...] = (),
    ) -> Any:
        try:
            return await self._run(args, transform)
        except CacheError as exc:
            flow = None if exc.__cause__ is None else recover(exc.__cause__, context)
            if flow is None:
                raise
        return await self._drive(flow)

    def _start_tracking(self) -> None:
        if self._tracking is None and self._tracker is not None and not self._closed:
            connect = partial(tracking_connection, self._config, ASYNC)
            self._tracking = asyncio.ensure_future(run_async(self._tracker, connect))

    async def _run_tracked(
        self, args: tuple[Any, ...], transform: Transform = None, node: Any = None
    ) -> Any:
        local = self._local
        assert local is not None
        local.invalidate_args(args)
        try:
            return await AsyncRedisCache._run(self, args, transform, node)
        finally:
            local.invalidate_args(args)

    async def _aclose_features(self) -> None:
        if self._tracker is not None:
            self._tracker.stopped = True
        if self._tracking is not None:
            self._tracking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tracking

    async def _single(self, key: str, make: Callable[[], Flow[Any]]) -> Any:
        """Run ``make()``'s flow once for all tasks asking for ``key`` at the same time."""
        return await self._flights.run(key, lambda: self._drive(make()))

    def _spawn(self, flow: Flow[Any]) -> None:
        """Run ``flow`` in the background (a task on the running loop; errors are the flow's to
        report)."""
        if self._closed:
            flow.close()
            return
        task = asyncio.ensure_future(self._drive(flow))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

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
        """Close every pooled connection (idempotent); background tasks are cancelled."""
        if not self._closed:
            self._closed = True
            for task in list(self._tasks):
                task.cancel()
            await self._aclose_features()
            self._execute = _aclosed
            await self._client.aclose()
