"""Workspace-wide pytest setup.

The fixtures every integration test shares (servers found or started, ``*_factory`` servers
owned by one test) are the plugin ``im_infra_testsupport.fixtures``, in tests/support/.

Unit tests (``packages/*/tests/unit``) are hermetic: the shell running them usually exports the
devstack's IM_INFRA_* variables (etcd endpoints, brokers, Redis URL), which now feed every
component's configuration (the default provider, the environment layer). They are removed for
unit tests, and the process-wide default provider is closed after each one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["im_infra_testsupport.fixtures"]

_ROOT = Path(__file__).parent


def is_unit_test(path: Path) -> bool:
    """``packages/<package>/tests/unit/...``"""
    try:
        parts = path.relative_to(_ROOT).parts
    except ValueError:
        return False
    return len(parts) > 4 and parts[0] == "packages" and parts[2:4] == ("tests", "unit")


@pytest.fixture(autouse=True)
def _hermetic_unit_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    if not is_unit_test(Path(str(request.node.path))):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("IM_INFRA_"):
                mp.delenv(name)
        yield
    from im_infra import coord

    coord.close_default_provider()
