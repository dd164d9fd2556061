"""The ``broker_deviation`` marker's rules (broker_deviations.py): which broker runs, skips or
must fail a marked test. Pure logic: no broker needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from im_infra_testsupport.broker_deviations import NOIDA, TANSU, BrokerUnderTest, identify, verdict

ON_NOIDA = BrokerUnderTest("127.0.0.1:1", NOIDA, "kafka")
ON_TANSU = BrokerUnderTest("127.0.0.1:2", TANSU, "kafka2")
ELSEWHERE = BrokerUnderTest("kafka-1:9092", None, None)  # Apache Kafka: no deviation assumed


def marks(*decorators: pytest.MarkDecorator) -> list[pytest.Mark]:
    return [d.mark for d in decorators]


def test_written_around_a_deviation_runs_everywhere() -> None:
    mark = marks(pytest.mark.broker_deviation("dead-member-never-evicted"))
    assert [verdict(mark, b) for b in (ON_NOIDA, ON_TANSU, ELSEWHERE)] == [None, None, None]


def test_needs_runs_only_where_the_deviation_is_and_says_why_elsewhere() -> None:
    mark = marks(pytest.mark.broker_deviation("sasl-not-enforced", needs=True))
    assert verdict(mark, ON_NOIDA) is None
    for broker in (ON_TANSU, ELSEWHERE):
        skip = verdict(mark, broker)
        assert skip is not None and skip.name == "skip"
        reason = skip.kwargs["reason"]
        assert "'sasl-not-enforced' (noida-db 0.2.3)" in reason
        assert broker.describe() in reason


def test_several_needs_run_where_any_applies() -> None:
    mark = marks(
        pytest.mark.broker_deviation("sasl-not-enforced", needs=True),
        pytest.mark.broker_deviation("acked-messages-lost-on-restart", needs=True),
    )
    assert verdict(mark, ON_NOIDA) is None
    skip = verdict(mark, ELSEWHERE)
    assert skip is not None
    assert "'sasl-not-enforced' (noida-db 0.2.3) or 'acked-messages-lost-on-restart'" in str(
        skip.kwargs["reason"]
    )


def test_fails_is_a_strict_xfail_only_where_the_deviation_is() -> None:
    mark = marks(pytest.mark.broker_deviation("dead-member-never-evicted", fails=True))
    xfail = verdict(mark, ON_NOIDA)
    assert xfail is not None and xfail.name == "xfail"
    assert xfail.kwargs["strict"] is True
    assert "dead-member-never-evicted" in xfail.kwargs["reason"]
    assert verdict(mark, ON_TANSU) is None
    assert verdict(mark, ELSEWHERE) is None


@pytest.mark.parametrize(
    ("decorator", "message"),
    [
        (pytest.mark.broker_deviation("no-such-thing"), "unknown broker deviation 'no-such-thing'"),
        (pytest.mark.broker_deviation(), "write broker_deviation(NAME)"),
        (pytest.mark.broker_deviation("sasl-not-enforced", skip=True), "needs=True"),
    ],
)
def test_a_malformed_or_unknown_mark_is_an_error(
    decorator: pytest.MarkDecorator, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verdict(marks(decorator), ON_NOIDA)


def test_the_broker_under_test_is_found_by_its_devstack_port(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    state = {
        "kafka": {"port": 1111, "impl": NOIDA},
        "kafka2": {"port": 2222, "impl": TANSU},
    }
    (tmp_path / "run" / "state.json").write_text(json.dumps(state))
    found = identify("127.0.0.1:2222", tmp_path)
    assert found == BrokerUnderTest("127.0.0.1:2222", TANSU, "kafka2")
    assert identify("127.0.0.1:1111", tmp_path).impl == NOIDA
    assert identify("127.0.0.1:3333", tmp_path).impl is None  # not devstack's
    assert identify(None, tmp_path).address is None
    assert identify("127.0.0.1:1111", tmp_path / "missing").impl is None
