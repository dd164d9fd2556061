"""Sans-I/O flows: multi-step operations written once, run by a blocking or an asyncio driver.

A flow is a generator that yields :class:`Cmd` (run this Redis command, send me the reply),
:class:`Sleep` or :class:`Call` (run this user function: a loader, a handler) steps; a redis-py
exception from a command (or the function's exception) is thrown into the generator so the flow
can react (NOSCRIPT -> reload). :class:`Runner` holds the stepping logic both drivers share; the
drivers only do the I/O (``execute_command`` / ``time.sleep`` vs their awaitable twins).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

from redis import exceptions as rex

from im_infra.cache._internal import metrics
from im_infra.cache._internal.errors import BACKEND_ERRORS, translate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cmd:
    """Run one command; the flow receives the (callback-parsed) reply."""

    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``fn()`` (the asyncio driver awaits an awaitable result); the flow receives its
    result, or its exception thrown in."""

    fn: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Done:
    """The flow returned ``value``."""

    value: Any


Step = Cmd | Sleep | Call
Flow = Generator[Step, Any, T]


class Runner:
    """Advances a flow with the reply (or exception) of its previous step.

    Also where every flow step is measured (operations, errors and duration by command), once
    for both drivers: a step's command is timed from the moment it is handed out to the driver
    until its reply or exception comes back.
    """

    __slots__ = ("_command", "_flow", "_secrets", "_started")

    def __init__(self, flow: Flow[Any], secrets: tuple[str, ...]) -> None:
        self._flow = flow
        self._secrets = secrets
        self._command: object = "?"
        self._started: float | None = None

    def advance(
        self, reply: Any = None, error: BaseException | None = None, *, unsafe: bool = False
    ) -> Step | Done:
        """Feed ``reply`` (or throw ``error``) into the flow; return its next step or Done.

        A redis-py exception the flow does not handle is translated into a CacheError here
        (``unsafe``: the failed command is not safe to repeat, see ``translate``).
        """
        started, self._started = self._started, None
        if started is not None and error is None:
            metrics.observe(self._command, started)
        try:
            step = self._flow.send(reply) if error is None else self._flow.throw(error)
        except StopIteration as stop:
            return Done(stop.value)
        except BACKEND_ERRORS as exc:
            failure = translate(exc, self._command, self._secrets, unsafe=unsafe)
            if started is not None and error is not None:
                metrics.failed(failure, self._command, started)
            raise failure from exc
        if started is not None and error is not None:  # the flow handled it (NOSCRIPT → load)
            metrics.observe(self._command, started)
        if type(step) is Cmd:
            self._command = step.args[0]
            self._started = perf_counter()
        return step


def sha1(lua: str) -> str:
    """The SHA1 Redis uses to identify ``lua``."""
    return hashlib.sha1(lua.encode(), usedforsecurity=False).hexdigest()


def script_flow(lua: str, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Flow[Any]:
    """EVALSHA; on NOSCRIPT (after SCRIPT FLUSH, a restart or a failover) SCRIPT LOAD and retry."""
    command = ("EVALSHA", sha, len(keys), *keys, *args)
    try:
        return (yield Cmd(command))
    except rex.NoScriptError:
        yield Cmd(("SCRIPT LOAD", lua))
        return (yield Cmd(command))


def ensure_scripts_flow(scripts: dict[str, str]) -> Flow[None]:
    """Load every script (sha -> lua) the server does not have (before a pipeline runs EVALSHAs)."""
    shas = list(scripts)
    present = yield Cmd(("SCRIPT EXISTS", *shas))
    for sha, ok in zip(shas, present, strict=True):
        if not ok:
            yield Cmd(("SCRIPT LOAD", scripts[sha]))
