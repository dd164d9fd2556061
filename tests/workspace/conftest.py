"""Fixtures for the workspace checks: the repository and its packages, read from the pyprojects.

These tests need no server: they check the workspace itself (dependency rule, layout, that each
package builds and installs alone, the CI workflows and the docker/ compose file).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES_DIR = REPO / "packages"
PREFIX = "im-infra-"


@dataclass(frozen=True)
class Package:
    """One workspace member: ``packages/im-infra-<short>/``."""

    short: str  # "clog"
    directory: Path
    pyproject: dict[str, Any]

    @property
    def dist_name(self) -> str:  # "im-infra-clog"
        return PREFIX + self.short

    @property
    def version(self) -> str:
        return str(self.pyproject["project"]["version"])


def load_packages() -> list[Package]:
    """Every directory under packages/ that holds a pyproject.toml, sorted by name."""
    found = []
    for pyproject in sorted(PACKAGES_DIR.glob("*/pyproject.toml")):
        directory = pyproject.parent
        assert directory.name.startswith(PREFIX), f"{directory} is not named {PREFIX}<name>"
        with pyproject.open("rb") as f:
            data = tomllib.load(f)
        found.append(Package(directory.name.removeprefix(PREFIX), directory, data))
    return found


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def packages() -> list[Package]:
    found = load_packages()
    assert found, f"no packages found under {PACKAGES_DIR}"
    return found
