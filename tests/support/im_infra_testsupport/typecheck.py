"""One ``mypy --strict`` run over the whole repository (``scripts/typecheck``).

mypy names a file by the directories above it up to the first that is not an identifier;
``packages/im-infra-db/tests/unit/conftest.py`` and ``packages/im-infra-mq/tests/unit/conftest.py``
would both be ``unit.conftest`` (``im-infra-db`` is no identifier), a duplicate module. Here each
test tree of ``packages/im-infra-<p>/`` is named ``im_infra_<p>_tests``, the Python programs in
scripts/ ``scripts.<name>``, and everything else keeps mypy's name (the root pyproject's
``explicit_package_bases`` and ``mypy_path``); then mypy builds once with those sources.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[3]
TARGETS = ["packages", "examples", "benchmarks", "tests", "scripts"]
_TESTS = re.compile(r"packages/im-infra-(?P<p>[a-z]+)/tests/(?P<rest>.+)\.py$")


def _scripts() -> list[str]:
    """The Python programs in scripts/ (no .py suffix: executables)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "scripts").iterdir()
        if p.is_file() and p.read_text(errors="replace").startswith("#!/usr/bin/env python")
    )


def _name(source: BuildSource) -> BuildSource:
    rel = Path(source.path or "").resolve().relative_to(ROOT).as_posix()
    m = _TESTS.match(rel)
    if m:
        parts = m.group("rest").split("/")
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join([f"im_infra_{m.group('p')}_tests", *parts])
        return BuildSource(source.path, module, None, source.base_dir)
    if rel.startswith("scripts/") and not rel.endswith(".py"):
        module = "scripts." + Path(rel).name.replace("-", "_")
        return BuildSource(source.path, module, None, source.base_dir)
    return source


def main(argv: list[str]) -> int:
    targets = [t for t in TARGETS if (ROOT / t).is_dir() and t != "scripts"] + _scripts()
    args = ["--strict", *argv, *targets]
    print("$ mypy " + " ".join(args), file=sys.stderr)
    sources, options = process_options(args)
    sources = [_name(s) for s in sources]
    seen: dict[str, str | None] = {}
    for s in sources:
        if s.module in seen:
            print(f"duplicate module {s.module}: {s.path} and {seen[s.module]}", file=sys.stderr)
            return 2
        seen[s.module] = s.path
    try:
        result = build.build(sources, options)
    except CompileError as exc:
        for line in exc.messages:
            print(line)
        return 2
    for line in result.errors:
        print(line)
    errors = sum(": error:" in line for line in result.errors)
    print(
        f"Found {errors} errors" if errors else f"Success: no issues in {len(sources)} files",
        file=sys.stderr,
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
