"""The known deviations from Apache Kafka of the Kafka-protocol brokers the tests run on.

The mq integration tests run against the devstack's broker (``kafka``: noida-db) and, in a
second pass, against an independent implementation (``kafka2``: Tansu), see docs/testing.md.
A test whose outcome depends on one of these deviations names it with the marker
``@pytest.mark.broker_deviation(NAME, ...)``; an unknown name is a collection error. How the
test runs on a broker that has the deviation (``BrokerUnderTest.has``) is said by the marker:

- ``broker_deviation(NAME)``: the test is written around the deviation (say, static membership
  because noida-db never evicts a dead member) and passes on every broker;
- ``broker_deviation(NAME, needs=True)``: the test provokes or asserts the deviation itself; on a
  broker without it the test is skipped, the skip reason naming the deviation (``-ra`` prints it);
- ``broker_deviation(NAME, fails=True)``: the deviation makes the test fail; on a broker with it
  the test still runs and must fail (``xfail(strict=True)``): when the broker is fixed, the
  unexpected pass fails the run and the marker is removed.

Nothing here is hidden or skipped silently: every skip and xfail carries the deviation's name,
the broker and what the deviation is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from im_infra_testsupport.backends import NOIDA_VERSION, TANSU_VERSION

NOIDA = f"noida-db {NOIDA_VERSION}"
TANSU = f"Tansu {TANSU_VERSION}"
# Tansu's deviations found so far make no test fail (docs/testing.md lists them); a test that
# depends on one names it here first.


@dataclass(frozen=True)
class Deviation:
    brokers: tuple[str, ...]  # the implementations (as devstack names them) that have it
    what: str


DEVIATIONS: dict[str, Deviation] = {
    "dead-member-never-evicted": Deviation(
        (NOIDA,),
        "a group member that dies without leaving (SIGKILL) is never evicted: session.timeout.ms "
        "is not enforced and the next join waits forever; static membership avoids it",
    ),
    "acked-messages-lost-on-restart": Deviation(
        (NOIDA,),
        "after a restart (even SIGTERM) the last acknowledged messages can be missing, and an "
        "idempotent producer then fails fatally with OUT_OF_ORDER_SEQUENCE_NUMBER",
    ),
    "sasl-not-enforced": Deviation(
        (NOIDA,),
        "no authentication option: SASL/PLAIN with any username and password is accepted, and "
        "clients without SASL are served",
    ),
}


@dataclass(frozen=True)
class BrokerUnderTest:
    """The broker ``IM_INFRA_KAFKA_BROKERS`` names, identified from devstack's state.json."""

    address: str | None
    impl: str | None  # "noida-db 0.2.3", "Tansu 0.6.0"; None when devstack did not start it
    server: str | None  # devstack's name for it: "kafka", "kafka2"

    def has(self, name: str) -> bool:
        return self.impl in deviation(name).brokers

    def describe(self) -> str:
        if self.address is None:
            return "none yet (IM_INFRA_KAFKA_BROKERS unset)"
        if self.impl is None:
            return f"{self.address} (not started by devstack: no deviations assumed)"
        return f"{self.address} = {self.impl} (devstack {self.server})"


def deviation(name: str) -> Deviation:
    """The deviation called ``name``; ValueError naming the known ones if there is none."""
    try:
        return DEVIATIONS[name]
    except KeyError:
        known = ", ".join(sorted(DEVIATIONS))
        raise ValueError(f"unknown broker deviation {name!r}; known: {known}") from None


def verdict(marks: Iterable[pytest.Mark], broker: BrokerUnderTest) -> pytest.MarkDecorator | None:
    """What a test's ``broker_deviation`` marks make of it on ``broker``: a skip (it needs
    deviations the broker has none of), a strict xfail (it fails because of one the broker
    has), or None (it runs as it is). ValueError for a malformed mark or an unknown name."""
    named: list[tuple[str, Deviation, Mapping[str, Any]]] = []
    for mark in marks:
        if len(mark.args) != 1 or set(mark.kwargs) - {"needs", "fails"}:
            raise ValueError(
                "write broker_deviation(NAME), (NAME, needs=True) or (NAME, fails=True)"
            )
        named.append((mark.args[0], deviation(mark.args[0]), mark.kwargs))
    needed = [(name, known) for name, known, kwargs in named if kwargs.get("needs")]
    if needed and not any(broker.has(name) for name, _ in needed):
        names = " or ".join(f"{name!r} ({', '.join(known.brokers)})" for name, known in needed)
        reason = f"needs broker deviation {names}; the broker under test is {broker.describe()}"
        return pytest.mark.skip(reason=reason)
    for name, known, kwargs in named:
        if kwargs.get("fails") and broker.has(name):
            reason = f"fails on broker deviation {name!r} of {broker.impl}: {known.what}"
            return pytest.mark.xfail(strict=True, reason=reason)
    return None


def identify(address: str | None, devstack_dir: Path) -> BrokerUnderTest:
    """Which of devstack's brokers listens at ``address`` (by port, on 127.0.0.1)."""
    if not address:
        return BrokerUnderTest(None, None, None)
    try:
        state: dict[str, Any] = json.loads((devstack_dir / "run" / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    for server in ("kafka", "kafka2"):
        info = state.get(server, {})
        if address == f"127.0.0.1:{info.get('port')}":
            return BrokerUnderTest(address, str(info.get("impl")), server)
    return BrokerUnderTest(address, None, None)
