"""The dependency rule between im-infra packages, enforced from the pyprojects and the imports.

Rule (docs/architecture.md): clog depends on no other im-infra package; coord may depend only
on clog; db, mq, uid and cache may depend on clog and coord, never on each other.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from .conftest import Package

PREFIX = "im-infra-"
# Which im-infra packages each package may depend on; packages not listed may use DEFAULT.
ALLOWED: dict[str, frozenset[str]] = {
    "clog": frozenset(),
    "coord": frozenset({"clog"}),
}
DEFAULT_ALLOWED = frozenset({"clog", "coord"})


def im_infra_dependencies(pyproject: Mapping[str, Any]) -> dict[str, set[str]]:
    """im-infra packages a pyproject depends on at runtime (dependencies and every extra).

    Returns {short name: {where it is declared}}, e.g. {"clog": {"dependencies"}}.
    """
    project = pyproject.get("project", {})
    declared: list[tuple[str, str]] = [
        (req, "dependencies") for req in project.get("dependencies", [])
    ]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        declared += [(req, f"optional-dependencies.{extra}") for req in reqs]
    found: dict[str, set[str]] = {}
    for text, where in declared:
        name = canonicalize_name(Requirement(text).name)
        if name.startswith(PREFIX):
            found.setdefault(name.removeprefix(PREFIX), set()).add(where)
    return found


def dependency_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every breach of the rule in {package: its im-infra dependencies}; empty when it holds."""
    problems = []
    for package, deps in sorted(graph.items()):
        allowed = ALLOWED.get(package, DEFAULT_ALLOWED) - {package}
        for dep in sorted(set(deps)):
            if dep not in graph:
                problems.append(f"im-infra-{package} depends on unknown package im-infra-{dep}")
            elif dep not in allowed:
                may = ", ".join(f"im-infra-{a}" for a in sorted(allowed)) or "no im-infra package"
                problems.append(
                    f"im-infra-{package} must not depend on im-infra-{dep} (it may use: {may})"
                )
    return problems


def imported_components(source: str) -> set[str]:
    """im_infra.<component> names a module imports (``import im_infra.x``, ``from im_infra.x
    import y``, ``from im_infra import x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "im_infra":
                found.update(alias.name for alias in node.names)
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "im_infra" and len(parts) > 1:
                found.add(parts[1])
    return found


def import_violations(package: str, src: Path, declared: Iterable[str]) -> list[str]:
    """Imports of im_infra components the package does not declare as dependencies."""
    allowed = set(declared) | {package}
    problems = []
    for path in sorted(src.rglob("*.py")):
        for component in sorted(imported_components(path.read_text()) - allowed):
            problems.append(
                f"{path} imports im_infra.{component} but im-infra-{package} does not "
                f"declare im-infra-{component} as a dependency"
            )
    return problems


# ------------------------------------------------------------------------------- the workspace
def test_pyproject_dependencies_follow_the_rule(packages: list[Package]) -> None:
    graph = {p.short: set(im_infra_dependencies(p.pyproject)) for p in packages}
    assert {"clog", "coord"} <= set(graph), f"clog and coord must exist, found {sorted(graph)}"
    assert dependency_violations(graph) == []


def test_imports_match_declared_dependencies(packages: list[Package]) -> None:
    problems = []
    for p in packages:
        declared = im_infra_dependencies(p.pyproject)
        problems += import_violations(p.short, p.directory / "src", declared)
    assert problems == []


def test_workspace_sources_for_im_infra_dependencies(packages: list[Package]) -> None:
    """An im-infra dependency resolves to the workspace member, never to an index."""
    problems = []
    for p in packages:
        sources = p.pyproject.get("tool", {}).get("uv", {}).get("sources", {})
        for dep in im_infra_dependencies(p.pyproject):
            source = sources.get(PREFIX + dep)
            if source != {"workspace": True}:
                problems.append(
                    f"{p.dist_name}: [tool.uv.sources] {PREFIX}{dep} = {source!r}, "
                    "expected { workspace = true }"
                )
    assert problems == []


# ------------------------------------------------------------------------------- the checkers
@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"clog": {"coord"}, "coord": set()}, "im-infra-clog must not depend on im-infra-coord"),
        (
            {"clog": set(), "coord": {"db"}, "db": set()},
            "im-infra-coord must not depend on im-infra-db",
        ),
        (
            {"clog": set(), "coord": set(), "mq": {"db"}, "db": set()},
            "im-infra-mq must not depend on im-infra-db",
        ),
        (
            {"clog": set(), "uid": {"cache"}, "cache": {"clog"}},
            "im-infra-uid must not depend on im-infra-cache",
        ),
        ({"clog": set(), "uid": {"nope"}}, "im-infra-uid depends on unknown package im-infra-nope"),
    ],
)
def test_checker_reports_a_broken_rule(graph: dict[str, set[str]], expected: str) -> None:
    problems = dependency_violations(graph)
    assert any(expected in p for p in problems), problems


def test_checker_accepts_the_allowed_shape() -> None:
    graph = {
        "clog": set(),
        "coord": {"clog"},
        "db": {"clog", "coord"},
        "mq": {"clog", "coord"},
        "uid": {"coord"},
        "cache": set(),
    }
    assert dependency_violations(graph) == []


def test_requirement_parsing_reads_extras_and_normalizes_names() -> None:
    pyproject = {
        "project": {
            "dependencies": [
                "IM_Infra.Clog>=0.1.0",
                "pydantic>=2",
                "im-infra-coord[x] ; python_version>'3'",
            ],
            "optional-dependencies": {"kafka": ["im-infra-mq==0.1.0"]},
        }
    }
    assert im_infra_dependencies(pyproject) == {
        "clog": {"dependencies"},
        "coord": {"dependencies"},
        "mq": {"optional-dependencies.kafka"},
    }


def test_import_checker_reports_an_undeclared_import(tmp_path: Path) -> None:
    src = tmp_path / "src" / "im_infra" / "uid"
    src.mkdir(parents=True)
    (src / "ok.py").write_text("from im_infra import clog\nimport im_infra.uid.layout\n")
    (src / "bad.py").write_text(
        textwrap.dedent(
            """
            from im_infra.cache import RedisCache
            def f() -> None:
                import im_infra.db as db
            """
        )
    )
    problems = import_violations("uid", tmp_path / "src", {"clog"})
    assert len(problems) == 2, problems
    assert "imports im_infra.cache" in problems[0]
    assert "imports im_infra.db" in problems[1]
    assert import_violations("uid", tmp_path / "src", {"clog", "cache", "db"}) == []
