"""`im-infra-demo --help` reads as plain text and every option says what it does."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def help_text(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "im_infra_demo.cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def undocumented(text: str) -> list[str]:
    """Options of an argparse help text that have no description."""
    lines = text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if not m:
            continue
        described = m.group(2) is not None or (
            i + 1 < len(lines) and re.match(r"^\s{6,}\S", lines[i + 1]) is not None
        )
        if not described:
            missing.append(m.group(1))
    return missing


@pytest.mark.parametrize("command", [(), ("gateway",), ("worker",)])
def test_help_is_plain_text_and_every_option_has_help(command: tuple[str, ...]) -> None:
    text = help_text(*command)
    assert "``" not in text and ":class:" not in text  # no RST markup
    assert undocumented(text) == []


def test_the_check_sees_an_option_without_help() -> None:
    assert undocumented("options:\n  --bare BARE\n  --ok OK    does things\n") == ["--bare BARE"]
