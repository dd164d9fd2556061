"""CI runs the README's two commands, literally, first, in the README's order."""

from __future__ import annotations

import re
import shlex
from pathlib import Path


def readme_commands(repo: Path) -> list[str]:
    """The commands of the README's quick start: its one-line fenced blocks, in order."""
    text = (repo / "README.md").read_text()
    start = text.index("## Quick start")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"^```\n(.*?)\n```$", section, re.M | re.S)
    return [b.strip() for b in blocks]


def ci_steps(repo: Path) -> list[list[str]]:
    """The command of each `step`/`setup` line of .ci/run, in order (after NAME and timeout)."""
    steps = []
    script = (repo / ".ci" / "run").read_text().replace("\\\n", " ")  # continued lines
    for line in script.splitlines():
        words = shlex.split(line, comments=True) if line.startswith(("step ", "setup ")) else []
        if words and words[0] == "step":
            steps.append(words[3:])
        elif words and words[0] == "setup":
            steps.append(words[2:])
    return steps


def test_ci_runs_the_readme_commands_first_in_order(repo: Path) -> None:
    readme = readme_commands(repo)
    assert readme == ["scripts/demo", "scripts/test"]
    steps = ci_steps(repo)
    # before them only the Python check, which installs and starts nothing
    assert steps[0] == ["ensure_python"]
    assert [" ".join(s) for s in steps[1:3]] == readme


def test_the_parsers_see_a_changed_order(tmp_path: Path, repo: Path) -> None:
    (tmp_path / ".ci").mkdir()
    ci = (repo / ".ci" / "run").read_text()
    swapped = (
        ci.replace('step "README: scripts/demo" 900 scripts/demo', "X")
        .replace(
            'step "README: scripts/test" 1500 scripts/test',
            'step "README: scripts/demo" 900 scripts/demo',
        )
        .replace("X", 'step "README: scripts/test" 1500 scripts/test')
    )
    (tmp_path / ".ci" / "run").write_text(swapped)
    (tmp_path / "README.md").write_text((repo / "README.md").read_text())
    assert [" ".join(s) for s in ci_steps(tmp_path)[1:3]] == ["scripts/test", "scripts/demo"]
    assert ci_steps(tmp_path)[1:3] != ci_steps(repo)[1:3]


def user_docs(repo: Path) -> list[Path]:
    return [
        repo / "README.md",
        *sorted((repo / "docs").glob("*.md")),
        *sorted(repo.glob("packages/*/README.md")),
        repo / "examples" / "chat" / "README.md",
    ]


def test_user_docs_point_only_inside_the_repository(repo: Path) -> None:
    outside = []
    for doc in user_docs(repo):
        text = doc.read_text()
        for bad in ("../shared", "shared/seeds", "shared/design"):
            if bad in text:
                outside.append(f"{doc.relative_to(repo)}: {bad}")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            if not (doc.parent / target).resolve().is_relative_to(repo):
                outside.append(f"{doc.relative_to(repo)}: link {target} leaves the repository")
            elif not (doc.parent / target).exists():
                outside.append(f"{doc.relative_to(repo)}: link {target} does not exist")
    assert outside == []
