"""Generated code is current: ``AsyncCache`` is derived from ``Cache`` (gen-cache-protocols).

The blocking Protocol is the one written by hand; a change to it that is not regenerated fails
here (and in CI, which runs this directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO

SCRIPT = REPO / "scripts" / "gen-cache-protocols"
PROTOCOLS = REPO / "packages/im-infra-cache/src/im_infra/cache/protocols.py"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--file", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_async_cache_protocol_is_generated_from_cache() -> None:
    done = check(PROTOCOLS)
    assert done.returncode == 0, done.stderr


def test_the_check_fails_when_cache_changes_without_regenerating(tmp_path: Path) -> None:
    text = PROTOCOLS.read_text()
    head, marker, generated = text.partition("# ---- GENERATED")
    assert marker and "class AsyncCache(Protocol)" in generated
    edited = head.replace('"""PING the server."""', '"""PING the server (edited)."""', 1)
    assert edited != head
    copy = tmp_path / "protocols.py"
    copy.write_text(edited + marker + generated)
    done = check(copy)
    assert done.returncode == 1
    assert "is not current: run scripts/gen-cache-protocols" in done.stderr
    # regenerating makes it current again, with the edit carried into AsyncCache
    regenerated = subprocess.run(
        [sys.executable, str(SCRIPT), "--file", str(copy)], check=True, cwd=REPO
    )
    assert regenerated.returncode == 0
    assert check(copy).returncode == 0
    assert copy.read_text().count("PING the server (edited).") == 2


def test_the_check_fails_when_the_generated_section_is_edited(tmp_path: Path) -> None:
    text = PROTOCOLS.read_text()
    edited = text.replace("    async def ping(self) -> bool:", "    async def ping(self) -> int:")
    assert edited != text
    copy = tmp_path / "protocols.py"
    copy.write_text(edited)
    assert check(copy).returncode == 1
