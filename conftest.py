"""Workspace-wide pytest setup.

Unit tests (under packages/) are hermetic: the shell running them usually exports the devstack's
IM_INFRA_* variables (etcd endpoints, brokers, Redis URL), which now feed every component's
configuration (the default provider, the environment layer). They are removed for unit tests,
and the process-wide default provider is closed after each one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_PACKAGES = Path(__file__).parent / "packages"


@pytest.fixture(autouse=True)
def _hermetic_unit_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    if not Path(str(request.node.path)).is_relative_to(_PACKAGES):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("IM_INFRA_"):
                mp.delenv(name)
        yield
    from im_infra import coord

    coord.close_default_provider()
