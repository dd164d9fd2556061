"""Sans-I/O flows: db's logic written once, run by a blocking or an asyncio driver.

The same rule as im_infra.cache (``cache/_internal/flow.py``): a flow is a generator that yields
the I/O it needs as steps and receives each step's result (or has its exception thrown in), so
error translation, closing and the nesting rules live in one place; :func:`run` performs the
steps with SQLAlchemy's blocking objects, :func:`arun` with their asyncio twins (same method
names, awaited). The blocking and the asyncio public classes only pick the driver.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``fn(*args)``; the asyncio driver awaits an awaitable result."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Enter:
    """Enter the (async) context manager ``cm``; the flow receives what it returns."""

    cm: Any


@dataclass(frozen=True, slots=True)
class Exit:
    """Leave the (async) context manager ``cm`` with ``exc`` (None: the block succeeded)."""

    cm: Any
    exc: BaseException | None


Step = Call | Enter | Exit
Flow = Generator[Step, Any, T]


def run(flow: Flow[T]) -> T:
    """Run ``flow`` with blocking I/O."""
    try:
        step = flow.send(None)
        while True:
            try:
                reply = _perform(step)
            except BaseException as exc:  # thrown into the flow, which decides
                step = flow.throw(exc)
            else:
                step = flow.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def arun(flow: Flow[T]) -> T:
    """Run ``flow`` with asyncio I/O."""
    try:
        step = flow.send(None)
        while True:
            try:
                reply = await _aperform(step)
            except BaseException as exc:  # thrown into the flow, which decides
                step = flow.throw(exc)
            else:
                step = flow.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _perform(step: Step) -> Any:
    if isinstance(step, Call):
        return step.fn(*step.args)
    if isinstance(step, Enter):
        return step.cm.__enter__()
    return step.cm.__exit__(*_exc_info(step.exc))


async def _aperform(step: Step) -> Any:
    if isinstance(step, Call):
        reply = step.fn(*step.args)
        return (await reply) if inspect.isawaitable(reply) else reply
    if isinstance(step, Enter):
        return await step.cm.__aenter__()
    return await step.cm.__aexit__(*_exc_info(step.exc))


def _exc_info(
    exc: BaseException | None,
) -> tuple[type[BaseException] | None, BaseException | None, Any]:
    return (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)


class Exits:
    """``with`` support for a flows class: leaving the block runs its ``_exit`` flow blocking."""

    __slots__ = ()

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run(self._exit(exc))


class AsyncExits:
    """``async with`` support for a flows class: leaving the block awaits its ``_exit`` flow."""

    __slots__ = ()

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await arun(self._exit(exc))
