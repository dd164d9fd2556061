"""How a command method written once in ``Ops`` is typed for each flavour (typing only).

A command method is written once (``Ops.get``: build the command, name the transform of its
reply) and returns what the flavour's ``_run`` returns: the value (blocking cache), an awaitable
of it (asyncio cache), the pipeline (queued). Python's types cannot say "the flavour's wrapper of
T" (no higher-kinded types), so the method is annotated ``-> Reply[T]`` (T flows from the
transform given to ``_run``) and decorated with :func:`command`, which the type checker sees as a
descriptor mapping ``Reply[T]`` to the flavour's return type by the class it is read from:

- a class with ``_mode: Literal["blocking"]`` (``RedisCache``): ``T``;
- ``Literal["asyncio"]`` (``AsyncRedisCache``): ``Coroutine[Any, Any, T]``;
- ``Literal["pipeline"]`` (the pipelines): ``Any`` (the pipeline while queueing, the value after
  WATCH and before MULTI: known only at run time);
- any other (shared code in ``Ops``/``CacheBase``): ``Reply[T]``, opaque.

So ``RedisCache().get(k)`` is ``str | None`` by construction, and mypy checks the clients
against the Protocols (``tests/test_cache_typing.py``). At run time :func:`command` returns the
function itself: the methods are plain functions, nothing is added to a call.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

__all__ = ["Reply", "command"]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
F = TypeVar("F", bound=Callable[..., Any])


class Reply(Generic[T_co]):
    """(Typing only: never instantiated.) A command's result of type ``T``, in the form of the
    flavour that runs it."""

    __slots__ = ()


class _Blocking(Protocol):
    _mode: Literal["blocking"]


class _Asyncio(Protocol):
    _mode: Literal["asyncio"]


class _Pipeline(Protocol):
    _mode: Literal["pipeline"]


if TYPE_CHECKING:

    class command(Generic[P, T]):  # noqa: N801  (used as a decorator)
        def __init__(self, fn: Callable[Concatenate[Any, P], Reply[T]], /) -> None: ...

        @overload
        def __get__(self, obj: None, owner: type[Any], /) -> command[P, T]: ...
        @overload
        def __get__(self, obj: _Blocking, owner: type[Any], /) -> Callable[P, T]: ...
        @overload
        def __get__(
            self, obj: _Asyncio, owner: type[Any], /
        ) -> Callable[P, Coroutine[Any, Any, T]]: ...
        @overload
        def __get__(self, obj: _Pipeline, owner: type[Any], /) -> Callable[P, Any]: ...
        @overload
        def __get__(self, obj: object, owner: type[Any], /) -> Callable[P, Reply[T]]: ...
        def __get__(self, obj: object, owner: type[Any], /) -> Any: ...

else:

    def command(fn: F) -> F:
        """The method itself (see the module docstring: a descriptor for the type checker)."""
        return fn
