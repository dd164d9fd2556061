"""coord's value types and Protocols sit below the implementations: at run time ``protocols.py``
and ``types.py`` import no etcd-backed module (checked on the source: importing any coord module
runs the package's ``__init__``, which imports everything)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import im_infra.coord

SOURCE = Path(im_infra.coord.__file__).parent

# what each lower module may import from coord at run time
ALLOWED = {
    "types.py": {"im_infra.coord._internal.documents"},
    "protocols.py": {"im_infra.coord.types", "im_infra.coord.component"},
}


def runtime_imports(path: Path) -> set[str]:
    """The im_infra modules ``path`` imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("im_infra")}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_lower_modules_import_no_implementation(module: str) -> None:
    assert runtime_imports(SOURCE / module) <= ALLOWED[module]


def test_the_check_sees_a_concrete_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "from im_infra.coord.registry import EtcdRegistry\n"
        "if TYPE_CHECKING:\n    from im_infra.coord.lock import DistributedLock\n"
    )
    assert runtime_imports(bad) == {"im_infra.coord.registry"}
