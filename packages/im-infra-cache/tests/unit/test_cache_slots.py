"""The asyncio cache's bound on commands in flight (``_internal/slots.py``): never more holders
than slots, first come first served, and no slot lost or doubled when a waiter is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from im_infra.cache._internal.slots import Slots


def test_never_more_holders_than_slots_and_waiters_served_in_order() -> None:
    async def main() -> None:
        slots = Slots(2)
        holding = peak = 0
        order: list[int] = []

        async def use(i: int) -> None:
            nonlocal holding, peak
            async with slots:
                holding += 1
                peak = max(peak, holding)
                order.append(i)
                await asyncio.sleep(0.001)
                holding -= 1

        await asyncio.gather(*(use(i) for i in range(20)))
        assert peak == 2
        assert order == list(range(20))
        assert slots.take() and slots.take() and not slots.take()

    asyncio.run(main())


def test_take_is_the_fast_path_and_release_hands_over_to_the_oldest_waiter() -> None:
    async def main() -> None:
        slots = Slots(1)
        assert slots.take()
        assert not slots.take()
        first = asyncio.ensure_future(slots.wait())
        second = asyncio.ensure_future(slots.wait())
        await asyncio.sleep(0)
        slots.release()  # to `first`, not to the free ones
        assert not slots.take()
        await first
        assert not second.done()
        slots.release()
        await second
        slots.release()
        assert slots.take()

    asyncio.run(main())


def test_a_cancelled_waiter_takes_no_slot_and_loses_none() -> None:
    async def main() -> None:
        slots = Slots(1)
        assert slots.take()
        waiter = asyncio.ensure_future(slots.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        slots.release()
        assert slots.take()  # the one slot is back, the cancelled waiter did not keep it
        assert not slots.take()

    asyncio.run(main())


def test_a_waiter_cancelled_after_the_hand_over_passes_the_slot_on() -> None:
    async def main() -> None:
        slots = Slots(1)
        assert slots.take()
        first = asyncio.ensure_future(slots.wait())
        second = asyncio.ensure_future(slots.wait())
        await asyncio.sleep(0)
        slots.release()  # handed to `first` ...
        first.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)  # the slot went on to `second`
        assert not slots.take()
        slots.release()
        assert slots.take()

    asyncio.run(main())
