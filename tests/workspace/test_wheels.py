"""Each package builds alone and installs alone; wheels of different packages coexist.

`uv build --package im-infra-<name>` must produce exactly that package's sdist and wheel, holding
only `im_infra/<name>/` (no `im_infra/__init__.py`: PEP 420 namespace package). A fresh venv
with only the clog wheel imports `im_infra.clog` and nothing else of im-infra; the coord wheel
installed beside it adds `im_infra.coord` with both importable, and removing one leaves the
other intact.

im-infra wheels are always passed as files (never resolved by name from an index, so a package
of the same name on PyPI cannot be picked up); third-party dependencies are pinned to uv.lock's
versions and installed from uv's cache (`--offline`), or from the index when the cache does not
know them yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from .conftest import Package

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # per uv command; the whole module takes well under a minute with a warm cache


@dataclass(frozen=True)
class Built:
    short: str
    version: str
    out_dir: Path
    files: list[str]

    @property
    def wheel(self) -> Path:
        return self.out_dir / f"im_infra_{self.short}-{self.version}-py3-none-any.whl"

    @property
    def sdist(self) -> Path:
        return self.out_dir / f"im_infra_{self.short}-{self.version}.tar.gz"


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def check(cmd: list[str], cwd: Path = REPO) -> str:
    proc = run(cmd, cwd)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, packages: list[Package]) -> dict[str, Built]:
    """Every package built alone into its own directory (in parallel: builds are independent)."""
    base = tmp_path_factory.mktemp("dist")

    def build(package: Package) -> Built:
        out = base / package.short
        check(["uv", "build", "--package", package.dist_name, "--out-dir", str(out), "-q"])
        # uv also writes a .gitignore into the output directory
        files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        return Built(package.short, package.version, out, files)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(build, packages))
    return {b.short: b for b in results}


def declared_im_infra(package: Package) -> set[str]:
    return {
        canonicalize_name(Requirement(r).name)
        for r in package.pyproject["project"].get("dependencies", [])
        if canonicalize_name(Requirement(r).name).startswith("im-infra-")
    }


# ------------------------------------------------------------------------------- building
@pytest.mark.parametrize("short", ["clog", "coord", "db", "mq", "uid", "cache"])
def test_package_builds_alone(built: dict[str, Built], packages: list[Package], short: str) -> None:
    package = next(p for p in packages if p.short == short)
    b = built[short]
    assert b.files == sorted([b.sdist.name, b.wheel.name]), (
        f"uv build --package {package.dist_name} produced {b.files}, expected only its "
        "own sdist and wheel"
    )

    with zipfile.ZipFile(b.wheel) as whl:
        names = whl.namelist()
        dist_info = f"im_infra_{short}-{b.version}.dist-info/"
        stray = [n for n in names if not n.startswith((f"im_infra/{short}/", dist_info))]
        assert stray == [], f"{b.wheel.name} holds files outside im_infra/{short}/: {stray}"
        assert "im_infra/__init__.py" not in names
        assert f"im_infra/{short}/__init__.py" in names
        assert f"im_infra/{short}/py.typed" in names
        metadata = Parser().parsestr(whl.read(dist_info + "METADATA").decode())
    assert metadata["Name"] == package.dist_name
    assert metadata["Version"] == package.version
    requires = {
        canonicalize_name(Requirement(r).name) for r in metadata.get_all("Requires-Dist") or []
    }
    assert {r for r in requires if r.startswith("im-infra-")} == declared_im_infra(package)

    with tarfile.open(b.sdist) as sdist:
        members = sdist.getnames()
    root = f"im_infra_{short}-{b.version}/"
    assert root + f"src/im_infra/{short}/__init__.py" in members
    assert root + "pyproject.toml" in members
    assert root + "README.md" in members
    others = [m for m in members if m.startswith(root + "src/im_infra/") and f"/{short}" not in m]
    assert [m for m in others if m != root + "src/im_infra"] == []


# ------------------------------------------------------------------------------- installing
@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uv.lock's third-party versions, so the venv gets what the workspace is tested with."""
    path = tmp_path_factory.mktemp("lock") / "constraints.txt"
    check(
        ["uv", "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-packages",
         "--format", "requirements-txt", "-q", "-o", str(path)]
    )  # fmt: skip
    return path


class Venv:
    def __init__(self, path: Path, constraints: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"
        self.constraints = constraints
        check(["uv", "venv", "-q", "--python", sys.executable, str(path)])

    def install(self, *wheels: Path) -> None:
        cmd = ["uv", "pip", "install", "-q", "--python", str(self.python),
               "-c", str(self.constraints), *map(str, wheels)]  # fmt: skip
        proc = run([*cmd, "--offline"])
        if proc.returncode != 0:
            # The cache does not hold what the resolution needs yet: uv says "network was
            # disabled", or, when it knows some versions of a package but not the one an extra
            # needs, that no version satisfies the requirement. Either way: ask the index.
            proc = run(cmd)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"

    def uninstall(self, name: str) -> None:
        check(["uv", "pip", "uninstall", "-q", "--python", str(self.python), name])

    def probe(self) -> dict[str, Any]:
        """What the venv sees: importable im_infra components and installed distributions."""
        code = """
import importlib, importlib.metadata, json, pathlib
dists = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
out = {"imports": {}, "dists": dists}
for name in ("clog", "coord", "db", "mq", "uid", "cache"):
    try:
        importlib.import_module("im_infra." + name)
        out["imports"][name] = "ok"
    except ModuleNotFoundError as exc:
        out["imports"][name] = "missing: " + str(exc.name)
import im_infra
out["namespace_file"] = getattr(im_infra, "__file__", None)
paths = [pathlib.Path(p) for p in im_infra.__path__]
out["namespace_init"] = [str(p) for p in paths if (p / "__init__.py").exists()]
print(json.dumps(out))
"""
        return dict(json.loads(check([str(self.python), "-c", code])))


def importable(probe: dict[str, Any]) -> set[str]:
    return {name for name, state in probe["imports"].items() if state == "ok"}


def test_wheels_install_alone_and_side_by_side(
    built: dict[str, Built], constraints: Path, tmp_path: Path
) -> None:
    venv = Venv(tmp_path / "venv", constraints)

    # 1. clog alone: it imports, and nothing else of im-infra is there.
    venv.install(built["clog"].wheel)
    probe = venv.probe()
    assert importable(probe) == {"clog"}, probe["imports"]
    assert [d for d in probe["dists"] if d.startswith("im-infra-")] == ["im-infra-clog"]
    assert "etcd-sdk-python" not in probe["dists"], "clog alone must not pull coord's deps"
    assert probe["namespace_file"] is None, "im_infra must be a namespace package"
    assert probe["namespace_init"] == []

    # 2. coord beside it (coord depends on clog: the installed clog wheel satisfies it).
    venv.install(built["clog"].wheel, built["coord"].wheel)
    probe = venv.probe()
    assert importable(probe) == {"clog", "coord"}, probe["imports"]
    assert probe["namespace_file"] is None
    assert probe["namespace_init"] == []

    # 3. removing coord leaves clog working: neither wheel owns the im_infra/ directory.
    venv.uninstall("im-infra-coord")
    probe = venv.probe()
    assert importable(probe) == {"clog"}, probe["imports"]


def test_a_component_with_both_foundation_deps_installs_beside_them(
    built: dict[str, Built], constraints: Path, tmp_path: Path
) -> None:
    venv = Venv(tmp_path / "venv", constraints)
    venv.install(built["clog"].wheel, built["coord"].wheel, built["uid"].wheel)
    probe = venv.probe()
    assert importable(probe) == {"clog", "coord", "uid"}, probe["imports"]
    assert [d for d in probe["dists"] if d.startswith("im-infra-")] == [
        "im-infra-clog",
        "im-infra-coord",
        "im-infra-uid",
    ]


def test_db_installs_no_driver_and_its_extras_bring_them(
    built: dict[str, Built], constraints: Path, tmp_path: Path
) -> None:
    """im-infra-db alone has no database driver: creating a provider names the extra to
    install; the ``[sqlite]`` extra brings the asyncio SQLite driver, which then works."""
    venv = Venv(tmp_path / "venv", constraints)
    venv.install(built["clog"].wheel, built["coord"].wheel, built["db"].wheel)
    drivers = {"psycopg", "psycopg-binary", "pymysql", "aiomysql", "aiosqlite"}
    assert drivers.isdisjoint(venv.probe()["dists"])
    code = """
import asyncio, sys
from im_infra import db
for config, cls in ((db.DBConfig(driver="postgresql", database="x"), db.DBProvider),
                    (db.DBConfig(driver="mysql", database="x"), db.DBProvider),
                    (db.DBConfig(driver="sqlite"), db.AsyncDBProvider)):
    try:
        cls(config)
    except db.DriverNotInstalledError as exc:
        print(exc.extra, "im-infra-db[%s]" % exc.extra in str(exc))
db.DBProvider(db.DBConfig(driver="sqlite")).close()  # sqlite3 is Python's own
"""
    out = check([str(venv.python), "-c", code])
    assert out.split() == ["postgresql", "True", "mysql", "True", "sqlite", "True"]
    extra = f"im-infra-db[sqlite] @ {built['db'].wheel.as_uri()}"
    venv.install(built["clog"].wheel, built["coord"].wheel, extra)  # type: ignore[arg-type]
    assert "aiosqlite" in venv.probe()["dists"]
    works = "import asyncio\nfrom im_infra import db\n" + (
        "async def main():\n"
        "    async with db.AsyncDBProvider(db.DBConfig(driver='sqlite')) as p:\n"
        "        await p.ping()\n"
        "asyncio.run(main())\nprint('ok')"
    )
    assert check([str(venv.python), "-c", works]).strip() == "ok"
