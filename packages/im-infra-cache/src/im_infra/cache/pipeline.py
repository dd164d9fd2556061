"""Pipelines and transactions: the full command set (key prefixing, encoding, reply transforms)
queued and sent in one round trip; ``execute()`` returns the transformed replies in order."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

from im_infra.cache._internal import metrics
from im_infra.cache._internal.args import unencodable
from im_infra.cache._internal.codec import Transform, decode_any
from im_infra.cache._internal.errors import BACKEND_ERRORS, translate
from im_infra.cache._internal.flow import ensure_scripts_flow
from im_infra.cache._internal.ops import Ops
from im_infra.cache._internal.retry import SAFE, is_safe

if TYPE_CHECKING:
    from im_infra.cache._internal.base import SomeCache
    from im_infra.cache.client import AsyncRedisCache
    from im_infra.cache.script import Script

__all__ = ["AsyncPipeline", "Pipeline"]


class _PipelineBase(Ops):
    """State shared by the blocking and the asyncio pipeline."""

    _mode: Literal["pipeline"]  # (typing only: commands return Any, _internal/command.py)

    def __init__(self, cache: SomeCache, pipe: Any, transaction: bool) -> None:
        self._cache = cache
        self._pipe = pipe
        self._prefix = cache._prefix
        self._serializer = cache._serializer
        self._secrets = cache._secrets
        self._transaction = transaction
        self._transforms: list[Transform] = []
        self._scripts: dict[str, str] = {}
        self._safe = True
        """Every queued command is safe to repeat (the pipeline is retried as a whole)."""

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        self._scripts[script.sha] = script.lua
        return self._run(("EVALSHA", script.sha, len(keys), *keys, *args), decode_any)

    def _queued(self, args: tuple[Any, ...], reply: Any, transform: Transform) -> bool:
        if reply is self._pipe:
            self._transforms.append(transform)
            if self._safe and not is_safe(args):
                self._safe = False
            return True
        return False

    def _take(self) -> tuple[list[Transform], dict[str, str], bool]:
        """The queued transforms and scripts, and whether all queued commands are safe."""
        transforms, scripts, safe = self._transforms, self._scripts, self._safe
        self._transforms, self._scripts, self._safe = [], {}, True
        return transforms, scripts, safe

    def _error(self, exc: Exception, command: str = "EXEC", *, unsafe: bool = False) -> Exception:
        name = command if self._transaction else "pipeline"
        return translate(exc, name, self._secrets, unsafe=unsafe)

    @staticmethod
    def _results(transforms: list[Transform], replies: list[Any]) -> list[Any]:
        return [r if t is None else t(r) for t, r in zip(transforms, replies, strict=True)]

    def multi(self) -> None:
        """After :meth:`watch`: start queueing the transaction's commands."""
        self._pipe.multi()

    def __len__(self) -> int:
        return len(self._transforms)


class Pipeline(_PipelineBase):
    """A blocking pipeline (``with cache.pipeline() as p:``); command methods return the pipeline
    (chainable) until :meth:`execute`. After :meth:`watch` and before :meth:`multi` commands run
    immediately and return their value (optimistic-locking reads)."""

    def _run(self, args: tuple[Any, ...], transform: Transform = None) -> Any:
        started = perf_counter()
        try:
            reply = self._pipe.execute_command(*args)
        except BACKEND_ERRORS as exc:
            raise metrics.failed(self._error(exc, args[0]), args[0], started) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(args[0], args, exc) from exc
        if self._queued(args, reply, transform):
            return self
        metrics.observe(args[0], started)  # ran at once (after WATCH, before MULTI)
        return reply if transform is None else transform(reply)

    def watch(self, *keys: str) -> None:
        """WATCH ``keys`` (prefixed): :meth:`execute` raises CacheWatchError if one changes."""
        started = perf_counter()
        try:
            self._pipe.watch(*self._keys(keys))
        except BACKEND_ERRORS as exc:
            raise metrics.failed(self._error(exc, "WATCH"), "WATCH", started) from exc
        metrics.observe("WATCH", started)

    def execute(self) -> list[Any]:
        """Send the queued commands; their transformed replies, in order. A command error raises
        (after all ran); a changed WATCHed key raises CacheWatchError."""
        transforms, scripts, safe = self._take()
        if scripts:
            self._cache._drive(ensure_scripts_flow(scripts))
        started = perf_counter()
        token = SAFE.set(safe)
        try:
            replies = self._pipe.execute()
        except BACKEND_ERRORS as exc:
            failure = self._error(exc, unsafe=not safe)
            raise metrics.failed(failure, metrics.PIPELINE, started) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(metrics.PIPELINE, (), exc) from exc
        finally:
            SAFE.reset(token)
        metrics.observe(metrics.PIPELINE, started)
        return self._results(transforms, replies)

    def reset(self) -> None:
        """Discard queued commands and unwatch; the pipeline can be reused."""
        self._take()
        self._pipe.reset()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reset()


class AsyncPipeline(_PipelineBase):
    """The asyncio pipeline (``async with cache.pipeline() as p:``): queueing methods are plain
    calls returning the pipeline; :meth:`execute`, :meth:`watch` and immediate commands after a
    watch are awaitable."""

    _cache: AsyncRedisCache

    def _run(self, args: tuple[Any, ...], transform: Transform = None) -> Any:
        reply = self._pipe.execute_command(*args)
        if self._queued(args, reply, transform):
            return self
        return self._immediate(reply, args[0], transform, safe=is_safe(args))

    async def _immediate(
        self,
        pending: Any,
        command: str,
        transform: Transform,
        operation: str | None = None,
        *,
        safe: bool = False,
    ) -> Any:
        """Await ``pending`` (a command run at once, WATCH, or the EXEC of ``execute``, then
        measured as ``operation``; ``safe``: it may be repeated after a failure)."""
        started = perf_counter()
        operation = operation or command
        token = SAFE.set(safe)
        try:
            reply = await pending
        except BACKEND_ERRORS as exc:
            failure = self._error(exc, command, unsafe=not safe)
            raise metrics.failed(failure, operation, started) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(operation, (), exc) from exc
        finally:
            SAFE.reset(token)
        metrics.observe(operation, started)
        return reply if transform is None else transform(reply)

    async def watch(self, *keys: str) -> None:
        """WATCH ``keys`` (prefixed): :meth:`execute` raises CacheWatchError if one changes."""
        await self._immediate(self._pipe.watch(*self._keys(keys)), "WATCH", None, safe=True)

    async def execute(self) -> list[Any]:
        """Send the queued commands; their transformed replies, in order."""
        transforms, scripts, safe = self._take()
        if scripts:
            await self._cache._drive(ensure_scripts_flow(scripts))
        async with self._cache._slots:
            replies = await self._immediate(
                self._pipe.execute(), "EXEC", None, metrics.PIPELINE, safe=safe
            )
        return self._results(transforms, replies)

    async def reset(self) -> None:
        """Discard queued commands and unwatch."""
        self._take()
        await self._pipe.reset()

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.reset()
