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
