"""The soak's accounting (pure logic, no servers) and its command line.

Every count of the report is checked on a hand-made run where the right answer is known: a
message acknowledged and stored once, one stored twice, one the broker lost, one im-infra lost,
one whose publish failed (and one of those stored anyway), one never reported, one row nobody
sent. The 30-minute result in docs/soak.md rests on these counts being right.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from im_infra_demo.soak import schedule
from im_infra_demo.soak_report import (
    ChaosEvent,
    Journal,
    Row,
    Sample,
    Send,
    account,
    build,
    markdown,
    per_minute,
    percentile,
    read_journal,
    resources,
    rss_growth,
    targets,
)

REPO = Path(__file__).resolve().parents[4]
T0 = 1_000_000.0


def sends() -> list[Send]:
    return [
        Send(0, 100, T0 + 1, ok=True),  # stored once
        Send(1, 101, T0 + 2, ok=True),  # stored twice
        Send(2, 102, T0 + 3, ok=True),  # acked, gone from the topic, not stored: the broker
        Send(3, 103, T0 + 4, ok=True),  # acked, in the topic, not stored: im-infra
        Send(4, 104, T0 + 5, ok=False, error="DeliveryError: fatal"),  # failed, not stored
        Send(5, 105, T0 + 6, ok=False, error="DeliveryError: fatal"),  # failed, yet stored
        Send(6, 106, T0 + 7, ok=None),  # no delivery report
        Send(7, None, T0 + 8, ok=False, error="QueueFullError: full"),  # never queued
    ]


def rows() -> list[Row]:
    return [
        Row(100, T0 + 1, T0 + 1.010),
        Row(101, T0 + 2, T0 + 2.020),
        Row(101, T0 + 2, T0 + 2.500),
        Row(105, T0 + 6, T0 + 6.030),
        Row(999, T0 + 9, T0 + 9.040),  # not sent by this run
    ]


def test_account_sorts_every_message_into_one_outcome() -> None:
    counts = account(sends(), rows(), in_topic=[100, 101, 103, 105])
    assert counts == {
        "sent": 8,
        "acked": 4,
        "publish_failed": 3,
        "failed_but_stored": 1,
        "unreported": 1,
        "stored_once": 1,
        "stored_more_than_once": 1,
        "stored_not_sent": 1,
        "lost": 2,
        "lost_by_broker": 1,
        "lost_by_im_infra": 1,
    }


def test_a_clean_run_has_nothing_lost_and_everything_once() -> None:
    clean = [Send(i, 100 + i, T0 + i, ok=True) for i in range(50)]
    stored = [Row(100 + i, T0 + i, T0 + i + 0.01) for i in range(50)]
    counts = account(clean, stored, in_topic=range(100, 150))
    assert counts["stored_once"] == counts["acked"] == 50
    assert counts["lost"] == counts["stored_more_than_once"] == counts["unreported"] == 0


def test_journal_pairs_sends_and_reports_in_either_order() -> None:
    lines = [
        json.dumps({"event": "start", "t": T0}),
        json.dumps({"seq": 0, "msg_id": 100, "sent_at": T0 + 1}),
        json.dumps({"seq": 1, "ok": True}),  # the report raced ahead of its send line
        json.dumps({"seq": 1, "msg_id": 101, "sent_at": T0 + 2}),
        json.dumps({"seq": 0, "ok": False, "error": "DeliveryError: x"}),
        json.dumps({"seq": 2, "msg_id": None, "sent_at": T0 + 3, "error": "QueueFullError"}),
        json.dumps({"seq": 3, "msg_id": 103, "sent_at": T0 + 4}),
        "",
        json.dumps({"event": "end", "t": T0 + 60}),
    ]
    j = read_journal(lines)
    assert (j.start, j.end) == (T0, T0 + 60)
    assert [(s.msg_id, s.ok) for s in j.sends.values()] == [
        (100, False),
        (101, True),
        (None, False),
        (103, None),
    ]
    assert j.sends[0].error == "DeliveryError: x"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_per_minute_keeps_chaos_windows_out_of_the_calm_p99() -> None:
    ss = [Send(i, i, T0 + i, ok=True) for i in range(120)]
    # minute 0: 10 ms each; minute 1: 10 ms, except 20 s of chaos at 1000 ms
    rs = [Row(i, T0 + i, T0 + i + (1.0 if 70 <= i < 90 else 0.01)) for i in range(120)]
    load = [(T0 + 5, 1.5), (T0 + 50, 3.0), (T0 + 65, 0.5)]
    minutes = per_minute(T0, 2, ss, rs, windows=[(T0 + 70, T0 + 90)], load=load)
    assert [m["load1"] for m in minutes] == [3.0, 0.5]
    assert [m["sent"] for m in minutes] == [60, 60]
    assert minutes[0]["p99_ms"] == pytest.approx(10, abs=0.01)
    assert minutes[1]["p99_ms"] == pytest.approx(1000, abs=0.01)
    assert minutes[1]["calm_p99_ms"] == pytest.approx(10, abs=0.01)
    assert minutes[1]["calm_messages"] == 40
    assert [m["chaos"] for m in minutes] == [False, True]


def test_rss_growth_follows_one_process_from_minute_five() -> None:
    series = [{"minute": m, "pid": 1, "rss_mb": 100.0 + m} for m in range(12)]
    series += [{"minute": m, "pid": 2, "rss_mb": 50.0} for m in range(12, 14)]  # restarted
    g = rss_growth(series, 5)
    assert g is not None
    assert (g["pid"], g["from_minute"], g["to_minute"]) == (1, 5, 11)
    assert g["growth"] == pytest.approx(111 / 105 - 1, abs=1e-4)
    assert rss_growth(series[:5], 5) is None


def test_targets_fail_on_loss_growth_and_slow_minutes() -> None:
    counts = account(sends(), rows(), in_topic=[100, 101, 103, 105])
    minutes = [
        {"minute": 0, "calm_messages": 100, "calm_p99_ms": 10.0},
        {"minute": 1, "calm_messages": 100, "calm_p99_ms": 19.0},
        {"minute": 2, "calm_messages": 100, "calm_p99_ms": 21.0},
        {"minute": 3, "calm_messages": 5, "calm_p99_ms": 500.0},  # too few to judge
    ]
    res = {
        "gateway": [{"minute": m, "pid": 1, "rss_mb": 100.0} for m in range(10)],
        "worker": [{"minute": m, "pid": 2, "rss_mb": 100.0 + 3 * m} for m in range(10)],
    }
    t = targets(counts, minutes, res)
    assert t["no_loss"] == {"met": False, "lost": 2}
    assert t["exactly_once"]["met"] is False
    assert t["flat_rss"]["met"] is False  # the worker: 127 / 115 - 1 > 10 %
    assert t["flat_rss"]["by_role"]["gateway"]["growth"] == 0
    assert t["p99_outside_chaos"]["minutes_over"] == [2]
    assert t["p99_outside_chaos"]["met"] is False


def test_build_and_markdown_on_a_small_run() -> None:
    j = Journal(start=T0, end=T0 + 130)
    j.sends = {i: Send(i, 1000 + i, T0 + i, ok=True, acked_at=T0 + i + 0.005) for i in range(120)}
    rs = [Row(1000 + i, T0 + i, T0 + i + 0.02) for i in range(120)]
    # 3 CPU seconds every 30 s: a tenth of a core
    samples = [Sample(T0 + 30 * k, "gateway", 7, 100_000, 15, 3.0 * k) for k in range(5)]
    rep = build(
        run={"run_id": "r", "minutes": 2, "rate": 1, "chaos_every_s": 120, "chaos_kinds": []},
        journal=j,
        rows=rs,
        in_topic=range(1000, 1120),
        events=[ChaosEvent("broker", T0 + 70, T0 + 71, "SIGTERM")],
        samples=samples,
        settle=10,
    )
    assert rep["counts"]["stored_once"] == 120 and rep["counts"]["lost"] == 0
    assert rep["chaos"] == [
        {"kind": "broker", "at_s": 70, "down_s": 1, "detail": "SIGTERM", "lost_by_broker": 0}
    ]
    assert rep["targets"]["flat_rss"]["met"] is None  # too short to tell
    assert rep["resources"]["gateway"][0] == {
        "minute": 0,
        "pid": 7,
        "rss_mb": 97.7,
        "fds": 15,
        "cpu_pct": 10.0,
    }
    assert rep["resources"]["gateway"][1]["cpu_pct"] == 10.0  # counted from minute 0's last
    assert [m["ack_p99_ms"] for m in rep["minutes"]] == [5.0, 5.0]
    text = markdown(rep)
    assert "| lost_by_im_infra | 0 |" in text and "| flat_rss | n/a |" in text
    json.dumps(rep)  # JSON-able


def test_cpu_share_of_a_restarted_process_counts_from_its_own_first_sample() -> None:
    samples = [
        Sample(T0 + 10, "worker", 1, 100_000, 10, 50.0),
        Sample(T0 + 20, "worker", 2, 100_000, 10, 0.5),  # restarted: a new pid, its own clock
        Sample(T0 + 40, "worker", 2, 100_000, 10, 4.5),
        Sample(T0 + 70, "worker", 2, 100_000, 10, 10.5),
    ]
    res = resources(T0, samples)["worker"]
    assert [(p["minute"], p["pid"], p["cpu_pct"]) for p in res] == [(0, 2, 20.0), (1, 2, 20.0)]


def test_broker_losses_are_put_on_the_restart_that_followed_them() -> None:
    j = Journal(start=T0)
    j.sends = {i: Send(i, 1000 + i, T0 + i, ok=True) for i in range(100)}
    lost_first, lost_second = {1010, 1011}, {1050}
    rs = [Row(1000 + i, T0 + i, T0 + i + 0.02) for i in range(100)]
    rs = [r for r in rs if r.msg_id not in lost_first | lost_second]
    events = [
        ChaosEvent("broker", T0 + 20, T0 + 21),
        ChaosEvent("redis", T0 + 40, T0 + 41),
        ChaosEvent("broker", T0 + 60, T0 + 61),
    ]
    rep = build(
        run={"run_id": "r", "minutes": 2, "rate": 1, "chaos_every_s": 20, "chaos_kinds": []},
        journal=j,
        rows=rs,
        in_topic=[i for i in range(1000, 1100) if i not in lost_first | lost_second],
        events=events,
        samples=[],
        settle=5,
    )
    assert rep["counts"]["lost_by_broker"] == 3
    assert [e.get("lost_by_broker") for e in rep["chaos"]] == [2, None, 1]


def test_schedule_brings_each_fault_once_in_a_short_run_and_none_in_the_first_minute() -> None:
    short = schedule(180, every=120)
    assert sorted(kind for _, kind in short) == ["broker", "etcd", "redis", "worker"]
    assert all(60 <= t <= 150 for t, _ in short)
    long = schedule(1800, every=120)
    assert len(long) == 14 and long[0][0] == 60 and long[1][0] == 180
    assert schedule(60, every=120) == []


def test_scripts_soak_help() -> None:
    out = subprocess.run(
        [str(REPO / "scripts" / "soak"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for option in ("--minutes", "--rate", "--chaos-every", "--report", "--strict"):
        assert option in out.stdout
    assert "usage: scripts/soak" in out.stdout


def test_the_load_process_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "im_infra_demo.soak_load", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--journal" in out.stdout
