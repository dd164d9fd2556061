"""uid's metrics, read through the OpenTelemetry SDK's in-memory reader, for known workloads
(worker IDs from the stack's etcd). Values are cumulative for the session: assert differences."""

from __future__ import annotations

import gc
import uuid
from typing import Any

import pytest

from im_infra import coord, uid

pytestmark = pytest.mark.integration

ISSUED = "im_infra.uid.ids.issued"
WAITS = "im_infra.uid.clock.backward.waits"
NS_PER_MS = 1_000_000


def test_ids_issued_counts_next_id_and_next_ids(metrics_probe: Any, etcd_endpoints: str) -> None:
    service = f"uid-metrics-{uuid.uuid4().hex[:10]}"
    before = metrics_probe.value(ISSUED)
    with coord.connect(etcd_endpoints, timeout=5) as provider:
        gen = uid.from_coord(provider, service, release_on_close=True)
        for _ in range(1_000):
            gen.next_id()
        assert metrics_probe.value(ISSUED) - before == 1_000
        gen.next_ids(50_000)  # spans several milliseconds
        gen.next_ids(0)
        assert metrics_probe.value(ISSUED) - before == 51_000
        gen.close()
        with pytest.raises(uid.GeneratorClosed):
            gen.next_id()
        assert metrics_probe.value(ISSUED) - before == 51_000  # a refused call issues nothing

    other = uid.new_generator(5)
    other.next_ids(4_097)  # a whole millisecond's sequence plus one
    assert metrics_probe.value(ISSUED) - before == 55_097
    # a generator that is garbage collected keeps its IDs in the total (a counter never drops)
    del gen, other
    gc.collect()
    assert metrics_probe.value(ISSUED) - before == 55_097


def test_clock_backward_waits(metrics_probe: Any) -> None:
    now = [1_767_225_600_000 * NS_PER_MS]

    def clock() -> int:  # time passes a little at every reading
        now[0] += 100_000
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += round(seconds * 1e9) or NS_PER_MS

    gen = uid.new_generator(9, clock=clock, sleep=sleep, max_backward_ms=5)
    before = metrics_probe.value(WAITS)
    gen.next_id()
    now[0] -= 3 * NS_PER_MS  # back 3 ms: waited out
    gen.next_id()
    assert metrics_probe.value(WAITS) - before == 1
    now[0] -= 20 * NS_PER_MS  # back 20 ms: refused, not a wait
    with pytest.raises(uid.ClockMovedBackwards):
        gen.next_id()
    assert metrics_probe.value(WAITS) - before == 1
    issued = metrics_probe.value(ISSUED)
    now[0] += 40 * NS_PER_MS
    gen.next_ids(10)
    assert metrics_probe.value(ISSUED) - issued == 10
