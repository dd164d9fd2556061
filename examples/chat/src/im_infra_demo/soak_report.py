"""The soak's accounting and report: pure functions over what the run recorded.

Inputs: the gateway's journal (what was sent, what Kafka acknowledged), the rows the workers
stored, the message ids the topic still holds after the run, the chaos events and the resource
samples. Outputs: one JSON-able dict (:func:`build`), its markdown (:func:`markdown`) and a PNG
of RSS and p99 over time (:func:`plot`).

Where a message went, for every message the gateway accepted:

- ``stored_once``: acknowledged by Kafka and stored exactly once (the goal);
- ``publish_failed``: the delivery report said it failed, so the sender was told (not lost);
  ``failed_but_stored`` counts those the worker stored all the same (a sender's retry would
  then store the text twice);
- ``lost``: acknowledged, never stored. Split by whether the topic still holds it after the run:
  ``lost_by_broker`` (acknowledged, then gone from the topic: the local broker's known
  deviation across a restart) and ``lost_by_im_infra`` (in the topic, not stored);
- ``unreported``: queued, but no delivery report came (mq promises one per message);
- ``stored_more_than_once`` and ``stored_not_sent``: rows that break exactly-once storage.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Processes whose memory the RSS target is about (the servers are shown for information).
IM_INFRA_ROLES = ("gateway", "worker")
RSS_GROWTH_LIMIT = 0.10
P99_FACTOR = 2.0
#: A minute's p99 outside the chaos windows is judged only from this many messages up.
MIN_CALM_MESSAGES = 30
#: RSS growth is measured from this minute on (start-up allocations come before it).
RSS_FROM_MINUTE = 5


@dataclass
class Send:
    """One message the gateway accepted, with what its delivery report said."""

    seq: int
    msg_id: int | None
    sent_at: float
    ok: bool | None = None
    error: str | None = None
    acked_at: float = math.nan  # when the delivery report came (journals from before: nan)


@dataclass(frozen=True)
class Row:
    msg_id: int
    sent_at: float
    stored_at: float


@dataclass(frozen=True)
class ChaosEvent:
    kind: str
    at: float
    recovered: float
    detail: str = ""


@dataclass(frozen=True)
class Sample:
    t: float
    role: str
    pid: int
    rss_kb: int
    fds: int
    cpu_s: float = 0.0  # user + system CPU seconds the process has used so far


@dataclass
class Journal:
    start: float | None = None
    end: float | None = None
    sends: dict[int, Send] = field(default_factory=dict)


def read_journal(lines: Iterable[str]) -> Journal:
    """Parse the gateway's JSON-lines journal (see :mod:`im_infra_demo.soak_load`)."""
    j = Journal()
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("event") == "start":
            j.start = float(rec["t"])
        elif rec.get("event") == "end":
            j.end = float(rec["t"])
        elif "sent_at" in rec:
            seq = int(rec["seq"])
            prior = j.sends.get(seq)  # a delivery report can be written before its send line
            send = Send(seq, rec["msg_id"], float(rec["sent_at"]))
            if rec.get("error") is not None:  # not even queued
                send.ok, send.error = False, str(rec["error"])
            elif prior is not None:
                send.ok, send.error, send.acked_at = prior.ok, prior.error, prior.acked_at
            j.sends[seq] = send
        elif "ok" in rec:
            seq = int(rec["seq"])
            send = j.sends.setdefault(seq, Send(seq, None, math.nan))
            send.ok, send.error = bool(rec["ok"]), rec.get("error")
            send.acked_at = float(rec.get("t", math.nan))
    return j


def account(sends: Iterable[Send], rows: Iterable[Row], in_topic: Iterable[int]) -> dict[str, int]:
    """Where every sent message went (see the module docstring for each count)."""
    sends = list(sends)
    stored = Counter(r.msg_id for r in rows)
    topic = set(in_topic)
    sent_ids = {s.msg_id for s in sends if s.msg_id is not None}
    acked = [s for s in sends if s.ok is True and s.msg_id is not None]
    failed = [s for s in sends if s.ok is False]
    lost = [s for s in acked if stored[s.msg_id or 0] == 0]
    return {
        "sent": len(sends),
        "acked": len(acked),
        "publish_failed": len(failed),
        "failed_but_stored": sum(1 for s in failed if s.msg_id is not None and stored[s.msg_id]),
        "unreported": sum(1 for s in sends if s.ok is None),
        "stored_once": sum(1 for s in acked if stored[s.msg_id or 0] == 1),
        "stored_more_than_once": sum(1 for i in sent_ids if stored[i] > 1),
        "stored_not_sent": sum(n for i, n in stored.items() if i not in sent_ids),
        "lost": len(lost),
        "lost_by_broker": sum(1 for s in lost if s.msg_id not in topic),
        "lost_by_im_infra": sum(1 for s in lost if s.msg_id in topic),
    }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def chaos_windows(events: Iterable[ChaosEvent], settle: float) -> list[tuple[float, float]]:
    """Each event's window: from the fault until ``settle`` seconds after recovery."""
    return [(e.at, e.recovered + settle) for e in events]


def _in_any(t: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in windows)


def per_minute(
    start: float,
    minutes: int,
    sends: Iterable[Send],
    rows: Iterable[Row],
    windows: Sequence[tuple[float, float]],
    load: Iterable[tuple[float, float]] = (),
) -> list[dict[str, Any]]:
    """Per minute of sending: messages sent and stored, end-to-end latency p50/p99 of all of
    them and p99 of those sent outside the chaos windows (``calm``), the p99 of the broker's
    acknowledgement alone (sent to delivery report: ``ack_p99_ms``, which splits the end-to-end
    figure into producing and consuming + storing), and the highest 1-minute load average of
    the machine sampled in it (``load``: (time, load average) pairs)."""
    busiest: dict[int, float] = {}
    for t, value in load:
        m = int((t - start) // 60)
        busiest[m] = max(busiest.get(m, 0.0), value)
    latency = {r.msg_id: (r.stored_at - r.sent_at) * 1000 for r in rows}
    sent = [0] * minutes
    every: list[list[float]] = [[] for _ in range(minutes)]
    calm: list[list[float]] = [[] for _ in range(minutes)]
    acks: list[list[float]] = [[] for _ in range(minutes)]
    for s in sends:
        if s.msg_id is None or math.isnan(s.sent_at):
            continue
        m = int((s.sent_at - start) // 60)
        if not 0 <= m < minutes:
            continue
        sent[m] += 1
        if s.ok and not math.isnan(s.acked_at):
            acks[m].append((s.acked_at - s.sent_at) * 1000)
        ms = latency.get(s.msg_id)
        if ms is None:
            continue
        every[m].append(ms)
        if not _in_any(s.sent_at, windows):
            calm[m].append(ms)
    out = []
    for m in range(minutes):
        lat, quiet = sorted(every[m]), sorted(calm[m])
        lo, hi = start + 60 * m, start + 60 * (m + 1)
        out.append(
            {
                "minute": m,
                "sent": sent[m],
                "stored": len(lat),
                "p50_ms": _round(percentile(lat, 50)),
                "p99_ms": _round(percentile(lat, 99)),
                "calm_messages": len(quiet),
                "calm_p99_ms": _round(percentile(quiet, 99)),
                "ack_p99_ms": _round(percentile(sorted(acks[m]), 99)),
                "chaos": any(a < hi and b > lo for a, b in windows),
                "load1": busiest.get(m),
            }
        )
    return out


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 2)


def resources(start: float, samples: Iterable[Sample]) -> dict[str, list[dict[str, Any]]]:
    """Per role and minute, the minute's last sample: pid, RSS (MiB) and open descriptors, and
    the share of one core the process used since the sample before it (``cpu_pct``; a process
    restarted in the minute counts from its own first sample)."""
    last: dict[tuple[str, int], Sample] = {}
    before: dict[tuple[str, int], Sample] = {}  # the sample before the minute's last one
    prev: dict[str, Sample] = {}
    for s in sorted(samples, key=lambda s: s.t):
        key = (s.role, int((s.t - start) // 60))
        p = prev.get(s.role)
        if p is None or p.pid != s.pid:
            before[key] = s  # a new process counts from its own first sample
        elif key not in before or before[key].pid != s.pid:
            before[key] = p  # a minute's first sample counts from the one before it
        last[key] = s
        prev[s.role] = s
    out: dict[str, list[dict[str, Any]]] = {}
    for (role, minute), s in sorted(last.items()):
        if minute < 0:
            continue
        b = before[(role, minute)]
        cpu = None
        if b.pid == s.pid and s.t > b.t:
            cpu = round(100 * (s.cpu_s - b.cpu_s) / (s.t - b.t), 1)
        out.setdefault(role, []).append(
            {
                "minute": minute,
                "pid": s.pid,
                "rss_mb": round(s.rss_kb / 1024, 1),
                "fds": s.fds,
                "cpu_pct": cpu,
            }
        )
    return out


def rss_growth(series: Sequence[Mapping[str, Any]], from_minute: int) -> dict[str, Any] | None:
    """Growth of the longest-lived process of a role from ``from_minute`` on: its highest RSS
    over its RSS at the first minute counted (a restarted process starts its own series)."""
    by_pid: dict[int, list[Mapping[str, Any]]] = {}
    for point in series:
        if point["minute"] >= from_minute:
            by_pid.setdefault(point["pid"], []).append(point)
    if not by_pid:
        return None
    pid, points = max(by_pid.items(), key=lambda kv: len(kv[1]))
    first = points[0]["rss_mb"]
    peak = max(p["rss_mb"] for p in points)
    return {
        "pid": pid,
        "from_minute": points[0]["minute"],
        "to_minute": points[-1]["minute"],
        "first_mb": first,
        "peak_mb": peak,
        "growth": round(peak / first - 1, 4) if first else None,
    }


def targets(
    counts: Mapping[str, int],
    minutes: Sequence[Mapping[str, Any]],
    res: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """The issue's done-when targets, each with what was measured and whether it was met."""
    base = minutes[0]["calm_p99_ms"] if minutes else None
    judged = [m for m in minutes if m["calm_messages"] >= MIN_CALM_MESSAGES]
    over = [
        m["minute"]
        for m in judged
        if base is not None and (m["calm_p99_ms"] or 0) > P99_FACTOR * base
    ]
    growth = {role: rss_growth(res.get(role, []), RSS_FROM_MINUTE) for role in IM_INFRA_ROLES}
    measured = {r: g for r, g in growth.items() if g is not None and g["growth"] is not None}
    return {
        "no_loss": {"met": counts["lost"] == 0, "lost": counts["lost"]},
        "exactly_once": {
            "met": counts["stored_more_than_once"] == 0
            and counts["stored_not_sent"] == 0
            and counts["unreported"] == 0
            and counts["stored_once"] == counts["acked"] - counts["lost"],
        },
        "flat_rss": {
            "met": all(g["growth"] < RSS_GROWTH_LIMIT for g in measured.values())
            if measured
            else None,  # a run shorter than RSS_FROM_MINUTE cannot tell
            "limit": RSS_GROWTH_LIMIT,
            "from_minute": RSS_FROM_MINUTE,
            "by_role": growth,
        },
        "p99_outside_chaos": {
            "met": base is not None and not over and len(judged) > 1,
            "first_minute_p99_ms": base,
            "limit_ms": None if base is None else round(P99_FACTOR * base, 2),
            "minutes_judged": len(judged),
            "minutes_over": over,
        },
    }


def build(
    *,
    run: Mapping[str, Any],
    journal: Journal,
    rows: Sequence[Row],
    in_topic: Iterable[int],
    events: Sequence[ChaosEvent],
    samples: Iterable[Sample],
    settle: float,
    load: Iterable[tuple[float, float]] = (),
) -> dict[str, Any]:
    """The whole report as one JSON-able dict."""
    start = journal.start if journal.start is not None else run["started"]
    sends = list(journal.sends.values())
    last = max((s.sent_at for s in sends if not math.isnan(s.sent_at)), default=start)
    n_minutes = max(1, math.ceil((last - start) / 60))
    windows = chaos_windows(events, settle)
    counts = account(sends, rows, in_topic)
    minutes = per_minute(start, n_minutes, sends, rows, windows, load)
    res = resources(start, samples)
    errors = Counter((s.error or "").split(":")[0] for s in sends if s.ok is False)
    stored, topic = {r.msg_id for r in rows}, set(in_topic)
    gone = [
        s.sent_at
        for s in sends
        if s.ok and s.msg_id is not None and s.msg_id not in stored and s.msg_id not in topic
    ]
    return {
        "run": dict(run),
        "counts": counts,
        "publish_errors": dict(errors),
        "chaos": [
            {
                "kind": e.kind,
                "at_s": round(e.at - start, 1),
                "down_s": round(e.recovered - e.at, 2),
                "detail": e.detail,
                # acknowledged messages the topic no longer held, sent before this restart
                # and after the one before it
                **({"lost_by_broker": _lost_before(e, events, gone)} if e.kind == "broker" else {}),
            }
            for e in events
        ],
        "chaos_settle_s": settle,
        "minutes": minutes,
        "resources": res,
        "targets": targets(counts, minutes, res),
    }


def _lost_before(e: ChaosEvent, events: Sequence[ChaosEvent], gone: Sequence[float]) -> int:
    before = [x.at for x in events if x.kind == e.kind and x.at < e.at]
    since = max(before, default=-math.inf)
    return sum(1 for t in gone if since < t <= e.at)


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{round(x, 2):g}" if isinstance(x, float) else str(x)


def markdown(rep: Mapping[str, Any]) -> str:
    """The report as markdown (what docs/soak.md quotes)."""
    c, t, run = rep["counts"], rep["targets"], rep["run"]
    ok = "met" if all(v["met"] is not False for v in t.values()) else "NOT met"
    chaos = (
        f"Chaos every {run['chaos_every_s']:g} s after the first minute "
        f"({', '.join(run['chaos_kinds'])}); a chaos window lasts from the fault until "
        f"{rep['chaos_settle_s']:g} s after recovery."
        if run["chaos_kinds"]
        else "No chaos (--no-chaos): a baseline."
    )
    lines = [
        f"# Soak run {run['run_id']}: {run['minutes']:g} minutes at {run['rate']:g} msg/s",
        "",
        f"Targets {ok}. {chaos} Load: the machine's 1-minute load average (2 cores).",
        "",
        "| messages | count |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v} |" for k, v in c.items()]
    if rep["publish_errors"]:
        lines += [
            "",
            "Publish errors (the sender was told): "
            + ", ".join(f"{k} × {v}" for k, v in rep["publish_errors"].items()),
        ]
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    for name, v in t.items():
        detail = {k: x for k, x in v.items() if k != "met"}
        met = {True: "yes", False: "NO", None: "n/a"}[v["met"]]
        lines.append(f"| {name} | {met} | `{json.dumps(detail)}` |")
    lines += ["", "| chaos | at (s) | down (s) | detail |", "|---|---:|---:|---|"]
    for e in rep["chaos"]:
        detail = e["detail"]
        if "lost_by_broker" in e:
            detail += f"; acked messages gone from the topic: {e['lost_by_broker']}"
        lines.append(f"| {e['kind']} | {e['at_s']} | {e['down_s']} | {detail} |")
    roles = list(rep["resources"])
    head = " | ".join(f"{r} RSS MiB / fds / CPU %" for r in roles)
    lines += [
        "",
        "| min | sent | stored | p50 ms | p99 ms | calm p99 ms | ack p99 ms | chaos | load | "
        f"{head} |",
        "|" + "---:|" * (9 + len(roles)),
    ]
    by_minute = {
        role: {p["minute"]: p for p in series} for role, series in rep["resources"].items()
    }
    for m in rep["minutes"]:
        cells = []
        for role in roles:
            p = by_minute[role].get(m["minute"])
            cpu = "—" if p is None or p.get("cpu_pct") is None else f"{p['cpu_pct']:g}"
            cells.append("—" if p is None else f"{p['rss_mb']:g} / {p['fds']} / {cpu}")
        lines.append(
            f"| {m['minute']} | {m['sent']} | {m['stored']} | {_fmt(m['p50_ms'])} | "
            f"{_fmt(m['p99_ms'])} | {_fmt(m['calm_p99_ms'])} | {_fmt(m.get('ack_p99_ms'))} | "
            f"{'x' if m['chaos'] else ''} | "
            f"{_fmt(m.get('load1'))} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(rep: Mapping[str, Any], path: Path) -> None:
    """A PNG of RSS per process and p99 per minute (matplotlib, a dev dependency)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, for this figure only
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for role, series in rep["resources"].items():
        ax1.plot([p["minute"] for p in series], [p["rss_mb"] for p in series], label=role)
    ax1.set_ylabel("RSS (MiB), end of minute")
    ax1.legend(loc="upper left", fontsize="small", ncol=3)
    ms = rep["minutes"]
    ax2.plot([m["minute"] for m in ms], [m["p99_ms"] for m in ms], label="p99, all messages")
    ax2.plot(
        [m["minute"] for m in ms],
        [m["calm_p99_ms"] for m in ms],
        label="p99, outside chaos windows",
    )
    limit = rep["targets"]["p99_outside_chaos"]["limit_ms"]
    if limit is not None:
        ax2.axhline(limit, linestyle="--", color="grey", label="2× first minute")
    ax2.set_yscale("log")
    ax2.set_ylabel("end-to-end latency (ms)")
    ax2.set_xlabel("minute of the run")
    for e in rep["chaos"]:
        for ax in (ax1, ax2):
            ax.axvline(e["at_s"] / 60, color="red", alpha=0.25)
    ax2.legend(loc="upper left", fontsize="small")
    run = rep["run"]
    fig.suptitle(
        f"im-infra soak: {run['minutes']:g} min at {run['rate']:g} msg/s (red lines: chaos events)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
