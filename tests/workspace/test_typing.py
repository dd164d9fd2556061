"""mypy checks the cache clients against their Protocols: wrong types are rejected.

packages/im-infra-cache/tests/unit/test_cache_typing.py asserts the types mypy infers for the
clients;
this shows the check is not vacuous (as it was while ``Ops`` returned ``Any``): mypy --strict,
run on small modules, accepts correct uses and rejects a wrong result type, for both clients, and
a Protocol the clients do not match."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO

CORRECT = """
from im_infra.cache import AsyncCache, AsyncRedisCache, Cache, Lock, RedisCache

def blocking(c: RedisCache) -> Cache:
    text: str | None = c.get("k")
    keys: list[str] = c.hkeys("h")
    lock: Lock = c.lock("job")
    return c

async def asyncio(c: AsyncRedisCache) -> AsyncCache:
    n: int = await c.incr("k")
    return c
"""

WRONG = {
    "blocking result": (
        "def f(c: RedisCache) -> None:\n    x: int = c.get('k')\n",
        'expression has type "str | None", variable has type "int"',
    ),
    "asyncio result": (
        "async def f(c: AsyncRedisCache) -> None:\n    x: list[bytes] = await c.hkeys('h')\n",
        'expression has type "list[str]", variable has type "list[bytes]"',
    ),
    "asyncio result not awaited": (
        "def f(c: AsyncRedisCache) -> None:\n    x: float = c.ttl('k')\n",
        'expression has type "Coroutine[Any, Any, float]", variable has type "float"',
    ),
    "a Protocol the client does not match": (
        "class Bytes(Protocol):\n    def get(self, key: str) -> bytes | None: ...\n\n"
        "def f(c: RedisCache) -> Bytes:\n    return c\n",
        'Incompatible return value type (got "RedisCache", expected "Bytes")',
    ),
    "a handle of the other flavour": (
        "def f(c: AsyncRedisCache) -> Lock:\n    return c.lock('job')\n",
        'Incompatible return value type (got "AsyncLock", expected "Lock")',
    ),
}

HEADER = (
    "from typing import Protocol\nfrom im_infra.cache import AsyncRedisCache, Lock, RedisCache\n\n"
)


def mypy(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    paths = []
    for name, text in files.items():
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        paths.append(str(path))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *paths],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_mypy_accepts_correct_uses_and_rejects_wrong_types(tmp_path: Path) -> None:
    names = {name: f"wrong_{i}" for i, name in enumerate(WRONG)}
    files = {"correct": CORRECT}
    files.update({names[name]: HEADER + text for name, (text, _) in WRONG.items()})
    done = mypy(tmp_path, files)
    out = done.stdout
    assert "correct.py" not in out, out  # the correct module type-checks
    for name, (_, message) in WRONG.items():
        errors = [line for line in out.splitlines() if f"{names[name]}.py" in line]
        assert any(message in line for line in errors), f"{name}: {errors or out}"
