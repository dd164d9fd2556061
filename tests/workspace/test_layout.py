"""Every package has the shape docs/architecture.md fixes (checked for all of them, by name)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .conftest import Package

EXPECTED = {"clog", "coord", "db", "mq", "uid", "cache"}
# A plain release version: 0.1.0, 1.2.10 (pre/post/dev releases go through a deliberate change).
VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def layout_problems(directory: Path, short: str, pyproject: dict[str, Any]) -> list[str]:
    """Everything wrong with the package in ``directory`` (named im-infra-<short>)."""
    problems = []
    project = pyproject.get("project", {})
    if project.get("name") != f"im-infra-{short}":
        problems.append(f"project.name is {project.get('name')!r}, expected 'im-infra-{short}'")
    version = str(project.get("version", ""))
    if not VERSION_RE.match(version):
        problems.append(f"version {version!r} is not of the form MAJOR.MINOR.PATCH (e.g. 0.1.0)")
    if project.get("readme") != "README.md":
        problems.append("project.readme is not README.md")
    if not str(project.get("requires-python", "")).startswith(">=3.11"):
        problems.append(f"requires-python is {project.get('requires-python')!r}, expected >=3.11")
    if "Typing :: Typed" not in project.get("classifiers", []):
        problems.append("classifier 'Typing :: Typed' is missing")
    build = pyproject.get("build-system", {})
    if build.get("build-backend") != "hatchling.build":
        problems.append(f"build-backend is {build.get('build-backend')!r}, expected hatchling")
    wheel = pyproject.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {})
    if wheel.get("wheel", {}).get("packages") != ["src/im_infra"]:
        problems.append('[tool.hatch.build.targets.wheel] packages is not ["src/im_infra"]')

    readme = directory / "README.md"
    if not readme.is_file() or not readme.read_text().strip():
        problems.append("README.md is missing or empty")
    elif not re.search(rf"(pip install|uv add) im-infra-{short}\b", readme.read_text()):
        problems.append(f"README.md has no install line 'pip install im-infra-{short}'")
    namespace = directory / "src" / "im_infra"
    if (namespace / "__init__.py").exists():
        problems.append("src/im_infra/__init__.py exists: im_infra must stay a namespace package")
    others = (
        sorted(p.name for p in namespace.iterdir() if p.name != short) if namespace.is_dir() else []
    )
    if [o for o in others if o != "__pycache__"]:
        problems.append(f"src/im_infra/ holds more than {short}/: {others}")
    module = namespace / short
    if not (module / "__init__.py").is_file():
        problems.append(f"src/im_infra/{short}/__init__.py is missing")
    if not (module / "py.typed").is_file():
        problems.append(f"src/im_infra/{short}/py.typed is missing")
    tests = directory / "tests"
    if not any(tests.glob("**/test_*.py")):
        problems.append("tests/ holds no test_*.py file")
    return problems


def test_the_six_packages_exist(packages: list[Package]) -> None:
    assert {p.short for p in packages} == EXPECTED


@pytest.mark.parametrize("short", sorted(EXPECTED))
def test_package_layout(repo: Path, short: str) -> None:
    directory = repo / "packages" / f"im-infra-{short}"
    with (directory / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    problems = layout_problems(directory, short, pyproject)
    assert not problems, f"im-infra-{short}:\n" + "\n".join(problems)


def test_root_is_a_virtual_workspace(repo: Path) -> None:
    with (repo / "pyproject.toml").open("rb") as f:
        root = tomllib.load(f)
    assert "project" not in root, "the root pyproject must stay virtual (no [project])"
    assert "packages/*" in root["tool"]["uv"]["workspace"]["members"]
    indexes = {i["name"]: i for i in root["tool"]["uv"].get("index", [])}
    assert "publish-url" in indexes.get("im-infra-private", {}), (
        "release.yml publishes with `uv publish --index im-infra-private`: the root pyproject "
        "must declare that [[tool.uv.index]] with a publish-url"
    )
    assert not (repo / "src").exists(), "the workspace root holds no code"


def test_layout_checker_finds_a_broken_package(tmp_path: Path) -> None:
    directory = tmp_path / "im-infra-foo"
    (directory / "src" / "im_infra" / "foo").mkdir(parents=True)
    (directory / "src" / "im_infra" / "__init__.py").write_text("")
    (directory / "src" / "im_infra" / "foo" / "__init__.py").write_text("")
    (directory / "README.md").write_text("# foo\n")
    pyproject = {
        "project": {"name": "im-infra-foo", "version": "0.1", "requires-python": ">=3.11"},
        "build-system": {"build-backend": "hatchling.build"},
    }
    problems = "\n".join(layout_problems(directory, "foo", pyproject))
    for expected in (
        "version '0.1' is not of the form",
        "project.readme is not README.md",
        "Typing :: Typed",
        "packages is not",
        "no install line",
        "src/im_infra/__init__.py exists",
        "py.typed is missing",
        "tests/ holds no test_*.py",
    ):
        assert expected in problems
