"""``clog.lifecycle.on_close``: callbacks tied to an object's ``close()``, GC as the fallback."""

from __future__ import annotations

import asyncio
import gc

import pytest

from im_infra.clog.lifecycle import AsyncClosing, Closing, on_close


class Res(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class Child(Res):
    def close(self) -> None:
        super().close()


class Failing(Closing):
    def close(self) -> None:
        raise OSError("boom")


class AsyncRes(AsyncClosing):
    async def close(self) -> None:
        await asyncio.sleep(0)


def test_close_runs_the_callbacks_once_in_order() -> None:
    calls: list[str] = []
    r = Res()
    on_close(r, lambda: calls.append("a"))
    on_close(r, lambda: calls.append("b"))
    assert calls == []
    r.close()
    assert calls == ["a", "b"]
    r.close()
    with r:
        pass
    del r
    gc.collect()
    assert calls == ["a", "b"]


def test_a_subclass_calling_super_close_runs_them_once() -> None:
    calls: list[int] = []
    c = Child()
    on_close(c, lambda: calls.append(1))
    c.close()
    assert calls == [1] and c.closed == 1


def test_callbacks_run_when_close_raises() -> None:
    calls: list[int] = []
    f = Failing()
    on_close(f, lambda: calls.append(1))
    with pytest.raises(OSError, match="boom"):
        f.close()
    assert calls == [1]


def test_async_close_runs_the_callbacks() -> None:
    calls: list[int] = []
    r = AsyncRes()
    on_close(r, lambda: calls.append(1))
    asyncio.run(r.close())
    assert calls == [1]


def test_garbage_collection_runs_them_when_never_closed() -> None:
    calls: list[int] = []
    r = Res()
    on_close(r, lambda: calls.append(1))
    del r
    gc.collect()
    assert calls == [1]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    calls: list[int] = []
    r = Res()

    def bad() -> None:
        raise ValueError("hook")

    on_close(r, bad)
    on_close(r, lambda: calls.append(1))
    with pytest.raises(ValueError, match="hook"):
        r.close()
    assert calls == [1] and r.closed == 1


def test_an_owner_without_the_close_protocol_is_refused() -> None:
    with pytest.raises(TypeError, match="Closing"):
        on_close(object(), lambda: None)
