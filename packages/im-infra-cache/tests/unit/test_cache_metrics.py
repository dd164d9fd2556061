"""The in-process operation counts behind ``im_infra.cache.operations`` (no SDK needed)."""

from __future__ import annotations

import threading
from time import perf_counter
from typing import Any

from im_infra.cache._internal import metrics
from im_infra.cache.errors import CacheTimeout


def _reported() -> dict[str, float]:
    observations: Any = metrics._observe_operations(None)  # type: ignore[arg-type]
    return {o.attributes["command"]: o.value for o in observations}


def test_counts_by_lower_case_command_name_across_spellings() -> None:
    before = _reported()
    metrics.observe("UNITTESTCMD", perf_counter())
    metrics.observe(b"UNITTESTCMD", perf_counter())
    error = CacheTimeout("redis UNITTESTCMD: timed out")
    assert metrics.failed(error, "UNITTESTCMD", perf_counter()) is error
    assert _reported()["unittestcmd"] - before.get("unittestcmd", 0) == 3


def test_counts_are_exact_across_threads() -> None:
    before = _reported().get("threadedcmd", 0)

    def work() -> None:
        for _ in range(2000):
            metrics.observe("THREADEDCMD", perf_counter())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _reported()["threadedcmd"] - before == 8000
