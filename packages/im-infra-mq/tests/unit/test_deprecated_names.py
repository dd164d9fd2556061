"""Renamed public names (docs/naming.md) still work for one minor version, with a warning."""

import importlib
import sys

import pytest

from im_infra import mq


def test_factories_module_is_a_warning_shim_for_factory() -> None:
    sys.modules.pop("im_infra.mq.factories", None)
    with pytest.warns(DeprecationWarning, match=r"im_infra\.mq\.factories .*0\.2\.0.*factory"):
        old = importlib.import_module("im_infra.mq.factories")
    assert old.new_producer is mq.new_producer
    assert old.new_async_consumer is mq.factory.new_async_consumer


@pytest.mark.parametrize(
    ("old", "new"),
    [("KafkaAsyncProducer", "AsyncKafkaProducer"), ("KafkaAsyncConsumer", "AsyncKafkaConsumer")],
)
@pytest.mark.parametrize("module", ["im_infra.mq", "im_infra.mq.aio"])
def test_kafka_async_classes_are_deprecated_aliases_of_async_kafka(
    module: str, old: str, new: str
) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .*0\.2\.0.*use {new}"):
        alias = getattr(mod, old)
    assert alias is getattr(mq, new)
    assert old not in mq.__all__ and new in mq.__all__


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        mq.NoSuchThing  # noqa: B018


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("MemoryAsyncProducer", "AsyncMemoryProducer"),
        ("MemoryAsyncConsumer", "AsyncMemoryConsumer"),
    ],
)
def test_memory_async_classes_are_deprecated_aliases(old: str, new: str) -> None:
    from im_infra.mq import testing

    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .*0\.2\.0.*use {new}"):
        alias = getattr(testing, old)
    assert alias is getattr(testing, new)
    assert old not in testing.__all__
