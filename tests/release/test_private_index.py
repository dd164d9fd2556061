"""Releases through ``scripts/release`` to a real private index, and a service installing from it.

A pypiserver (from PyPI, in the dev group) runs on a free loopback port with authentication on
every action (upload, download, list), refusing overwrites (its default) and with no fallback to
the public index. ``scripts/release`` publishes clog, coord and cache to it, with the credentials
in the environment only. Then a fresh service project installs ``im-infra-cache`` the way
docs/releasing.md tells services to: every ``im-infra-*`` name pinned to the private index
(uv ``explicit`` index + ``[tool.uv.sources]``), everything else from the public index; the
family members installed are exactly clog, coord and cache, each the very file that was
published, and the README example shipped in the installed package's metadata runs against the
machine's Redis.

Refusals: a tag whose version is not the package's, a version published a second time (by the
script's check, and by the index itself when the script is bypassed), wrong credentials; the
password never appears in any output. Dependency confusion: with an index that offers
``im-infra-clog`` / ``im-infra-coord`` 99.0.0 (an attacker's upload to a public index), the
pinned service still gets the private 0.1.0 files, while a service that pins only the package it
names gets the attacker's (the control that proves this test can see the difference).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from im_infra_testsupport.backends import free_port
from im_infra_testsupport.fixtures import wait_until

with warnings.catch_warnings():  # passlib 1.7.4 imports the stdlib's deprecated crypt module
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.apache import HtpasswdFile  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / "scripts" / "release"
TIMEOUT = 240  # per command; the whole module takes ~30 s with a warm uv cache
FAMILY = ("clog", "coord", "db", "mq", "uid", "cache")
RELEASED = ("clog", "coord", "cache")  # in dependency order


def version_of(short: str) -> str:
    with (REPO / "packages" / f"im-infra-{short}" / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


V = {short: version_of(short) for short in RELEASED}  # the versions being released


def wheel_name(short: str) -> str:
    return f"im_infra_{short}-{V[short]}-py3-none-any.whl"


@dataclass
class PrivateIndex:
    root: Path
    user: str = "releaser"
    password: str = field(default_factory=lambda: "pw-" + uuid.uuid4().hex)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    outputs: list[str] = field(default_factory=list)  # everything a release printed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    def start(self) -> None:
        self.packages.mkdir(parents=True)
        htpasswd = HtpasswdFile(str(self.root / "htpasswd"), new=True)
        htpasswd.set_password(self.user, self.password)
        htpasswd.save()
        server = Path(sys.executable).parent / "pypi-server"
        cmd = [str(server), "run", "--host", "127.0.0.1", "--port", str(self.port),
               "--authenticate", "update,download,list", "--passwords",
               str(self.root / "htpasswd"), "--disable-fallback", "--health-endpoint", "/health",
               str(self.packages)]  # fmt: skip
        log = self.root / "pypiserver.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self._healthy, 30, "pypiserver", log)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"pypiserver exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.url + "health", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def files(self) -> set[str]:
        return {p.name for p in self.packages.iterdir()}

    def simple_page(self, name: str, password: str | None = None) -> tuple[int, str]:
        token = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 (http on loopback)
            f"{self.simple_url}{name}/", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def release(self, tag: str, out_dir: Path, *extra: str, password: str | None = None) -> str:
        """Run scripts/release; returns its output, after checking the password is not in it."""
        env = clean_env()
        env["UV_PUBLISH_USERNAME"] = self.user
        env["UV_PUBLISH_PASSWORD"] = password or self.password
        cmd = [sys.executable, str(RELEASE), tag, "--out-dir", str(out_dir),
               "--publish-url", self.url, "--simple-url", self.simple_url, *extra]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        output = proc.stdout + proc.stderr
        self.outputs.append(output)
        assert self.password not in output and (password is None or password not in output)
        return f"exit {proc.returncode}\n{output}"


def clean_env() -> dict[str, str]:
    """This process's environment without what points uv at the workspace or another index."""
    keep = ("UV_CACHE_DIR",)  # the warm cache of the workspace's third-party wheels
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_")) or k in keep}
    env.pop("VIRTUAL_ENV", None)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateIndex]:
    idx = PrivateIndex(tmp_path_factory.mktemp("private-index"))
    try:
        idx.start()
        yield idx
    finally:
        idx.stop()


@pytest.fixture(scope="module")
def released(index: PrivateIndex, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """clog, coord and cache released through scripts/release: short name -> its dist dir."""
    base = tmp_path_factory.mktemp("dist")
    dists = {}
    for short in RELEASED:
        out = base / short
        result = index.release(f"im-infra-{short}-v{V[short]}", out)
        assert result.startswith("exit 0"), result
        dists[short] = out
    return dists


# ------------------------------------------------------------------------------- releasing
def test_each_tag_publishes_its_own_package_only(
    index: PrivateIndex, released: dict[str, Path]
) -> None:
    expected = {
        name
        for short in RELEASED
        for name in (f"im_infra_{short}-{V[short]}.tar.gz", wheel_name(short))
    }
    assert index.files() == expected
    for short in RELEASED:
        status, page = index.simple_page(f"im-infra-{short}")
        assert status == 200
        assert wheel_name(short) in page
        assert f"im_infra_{short}-{V[short]}.tar.gz" in page
        published = index.packages / wheel_name(short)
        built = released[short] / published.name
        assert sha256(published) == sha256(built)
    assert index.simple_page("im-infra-db")[0] == 404


def test_published_metadata_has_project_urls_and_an_index_ready_readme(
    index: PrivateIndex, released: dict[str, Path]
) -> None:
    wheel = index.packages / wheel_name("cache")
    with zipfile.ZipFile(wheel) as whl:
        meta = Parser().parsestr(
            whl.read(f"im_infra_cache-{V['cache']}.dist-info/METADATA").decode()
        )
    urls = dict(str(u).split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Repository", "Documentation", "Changelog"}
    assert all(u.startswith("https://") for u in urls.values())
    readme = str(meta.get_payload())
    assert "pip install im-infra-cache" in readme
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert links, "the README links to the docs"
    assert [u for u in links if not u.startswith("https://")] == []


def test_a_tag_that_disagrees_with_the_package_version_is_refused(
    index: PrivateIndex, released: dict[str, Path], tmp_path: Path
) -> None:
    before = index.files()
    result = index.release("im-infra-clog-v9.9.9", tmp_path / "d1")
    assert result.startswith("exit 1"), result
    assert "TagError" in result and "9.9.9" in result and f"version {V['clog']}" in result
    for tag in ("im-infra-nope-v0.1.0", "clog-v0.1.0", "im-infra-clog-0.1.0"):
        result = index.release(tag, tmp_path / "d2")
        assert result.startswith("exit 1") and "TagError" in result, result
    assert index.files() == before
    assert not (tmp_path / "d1").exists(), "nothing is built for a refused tag"


def test_the_same_version_is_never_published_twice(
    index: PrivateIndex, released: dict[str, Path], tmp_path: Path
) -> None:
    wheel = index.packages / wheel_name("clog")
    before = sha256(wheel)

    # 1. scripts/release asks the index first and refuses with a clear message
    result = index.release(f"im-infra-clog-v{V['clog']}", tmp_path / "again")
    assert result.startswith("exit 1"), result
    assert "AlreadyPublishedError" in result and "bump the version" in result

    # 2. bypassing the script, the index itself refuses to replace the file
    env = clean_env()
    env["UV_PUBLISH_USERNAME"] = index.user
    env["UV_PUBLISH_PASSWORD"] = index.password
    rebuilt = tmp_path / "again" / wheel.name
    assert rebuilt.exists(), "the script built the files before asking the index"
    proc = run(["uv", "publish", "--trusted-publishing", "never", "--publish-url", index.url,
                str(rebuilt)], REPO, env)  # fmt: skip
    assert proc.returncode != 0
    assert "409" in proc.stderr, proc.stderr
    assert sha256(wheel) == before


def test_wrong_credentials_are_refused_and_never_printed(
    index: PrivateIndex, released: dict[str, Path], tmp_path: Path
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    result = index.release(f"im-infra-clog-v{V['clog']}", tmp_path / "d", password=wrong)
    assert result.startswith("exit 1"), result
    assert "PublishError" in result and "credentials" in result
    assert wrong not in result
    for output in index.outputs:
        assert index.password not in output


@pytest.fixture
def fresh_index(tmp_path: Path) -> Iterator[PrivateIndex]:
    idx = PrivateIndex(tmp_path / "fresh-index")
    try:
        idx.start()
        yield idx
    finally:
        idx.stop()


def upload(index: PrivateIndex, path: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env["UV_PUBLISH_USERNAME"] = index.user
    env["UV_PUBLISH_PASSWORD"] = index.password
    cmd = ["uv", "publish", "--trusted-publishing", "never", "--publish-url", index.url, str(path)]
    return run(cmd, REPO, env)


def test_a_release_stopped_between_its_uploads_is_finished_by_running_it_again(
    fresh_index: PrivateIndex, tmp_path: Path
) -> None:
    """The fault: the upload of the sdist never happened (the runner died, the index went away
    after the wheel). Running the release again, even from a new build (reproducible), uploads
    only what is missing; a third run is a plain "already published"."""
    tag = f"im-infra-uid-v{version_of('uid')}"
    first = tmp_path / "first"
    assert fresh_index.release(tag, first, "--build-only").startswith("exit 0")
    wheel = next(first.glob("*.whl"))
    assert upload(fresh_index, wheel).returncode == 0  # only the wheel made it
    assert fresh_index.files() == {wheel.name}

    result = fresh_index.release(tag, tmp_path / "second")  # a new build of the same commit
    assert result.startswith("exit 0"), result
    assert "resuming a partial release" in result
    assert fresh_index.files() == {wheel.name, wheel.name.replace("-py3-none-any.whl", ".tar.gz")}
    assert sha256(fresh_index.packages / wheel.name) == sha256(wheel)

    result = fresh_index.release(tag, tmp_path / "third")
    assert result.startswith("exit 1") and "AlreadyPublishedError" in result, result


def test_a_partial_release_with_different_contents_is_refused(
    fresh_index: PrivateIndex, tmp_path: Path
) -> None:
    tag = f"im-infra-uid-v{version_of('uid')}"
    built = tmp_path / "built"
    assert fresh_index.release(tag, built, "--build-only").startswith("exit 0")
    wheel = next(built.glob("*.whl"))
    other = tmp_path / "other" / wheel.name  # same name, other bytes (e.g. another commit)
    other.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(other, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("im_infra/uid/extra.txt", b"not in the release\n")
    assert upload(fresh_index, other).returncode == 0

    result = fresh_index.release(tag, built, "--publish-only")
    assert result.startswith("exit 1"), result
    assert "AlreadyPublishedError" in result and "differ" in result
    assert fresh_index.files() == {wheel.name}, "nothing uploaded beside the foreign file"


# ------------------------------------------------------------------------------- installing
ATTACKER_VERSION = "99.0.0"


def fake_wheel(directory: Path, short: str) -> Path:
    """An ``im-infra-<short>`` 99.0.0 wheel, as someone could upload to a public index."""
    dist = f"im_infra_{short}-{ATTACKER_VERSION}"
    path = directory / f"{dist}-py3-none-any.whl"
    files = {
        f"im_infra/{short}/__init__.py": b"PWNED = True\n",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: im-infra-{short}\nVersion: {ATTACKER_VERSION}\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
    return path


@dataclass(frozen=True)
class ServiceConfig:
    dependencies: list[str]
    index_name: str
    explicit: bool
    sources: dict[str, str]  # package -> index name


def documented_config() -> ServiceConfig:
    """The service configuration the README's Install section shows (docs/releasing.md has the
    same with a third-party dependency added)."""
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Install") :]
    block = re.search(r"```toml\n(.*?)```", install, re.DOTALL)
    assert block is not None, "the README's Install section shows the uv configuration"
    data = tomllib.loads(block.group(1))
    (idx,) = data["tool"]["uv"]["index"]
    sources = {name: src["index"] for name, src in data["tool"]["uv"]["sources"].items()}
    return ServiceConfig(data["project"]["dependencies"], idx["name"], idx["explicit"], sources)


def naive_config() -> ServiceConfig:
    """Only the package the service names is declared and pinned."""
    return ServiceConfig(
        [f"im-infra-cache>={V['cache']}"], "im-infra", True, {"im-infra-cache": "im-infra"}
    )


def service_pyproject(index: PrivateIndex, attacker: Path, config: ServiceConfig) -> str:
    """A service's pyproject.toml with ``config``, the test's private index at the URL, and
    an extra index that offers the attacker's wheels."""
    deps = ", ".join(json.dumps(d) for d in config.dependencies)
    sources = "\n".join(
        f"{name} = {{ index = {json.dumps(i)} }}" for name, i in config.sources.items()
    )
    return f"""[project]
name = "chat-service"
version = "1.0.0"
requires-python = ">=3.11"
dependencies = [{deps}]

[[tool.uv.index]]
name = {json.dumps(config.index_name)}
url = "{index.simple_url}"
explicit = {json.dumps(config.explicit)}

# Stands for a public index where someone uploaded im-infra-* names (dependency confusion).
[[tool.uv.index]]
name = "public-mirror"
url = "{attacker.as_uri()}"
format = "flat"

[tool.uv.sources]
{sources}
"""


def lock_packages(project: Path) -> dict[str, dict[str, Any]]:
    with (project / "uv.lock").open("rb") as f:
        return {p["name"]: p for p in tomllib.load(f)["package"]}


def public_registry() -> str:
    """The public index the workspace itself resolves third-party packages from."""
    with (REPO / "uv.lock").open("rb") as f:
        packages = {p["name"]: p for p in tomllib.load(f)["package"]}
    return str(packages["redis"]["source"]["registry"])


def uv_env(index: PrivateIndex) -> dict[str, str]:
    env = clean_env()
    # uv's per-index credentials (UV_INDEX_<NAME>_USERNAME/PASSWORD, as the README says):
    # never in pyproject.toml
    env["UV_INDEX_IM_INFRA_USERNAME"] = index.user
    env["UV_INDEX_IM_INFRA_PASSWORD"] = index.password
    return env


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("public-mirror")
    for short in ("clog", "coord"):
        fake_wheel(directory, short)
    return directory


@pytest.fixture(scope="module")
def service(
    index: PrivateIndex, released: dict[str, Path], attacker: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    """A fresh service project that installed im-infra-cache (and what it pulls) with uv."""
    project = tmp_path_factory.mktemp("chat-service")
    (project / "pyproject.toml").write_text(service_pyproject(index, attacker, documented_config()))
    proc = run(["uv", "sync", "--python", sys.executable, "--no-install-project"], project,
               uv_env(index))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert index.password not in proc.stdout + proc.stderr
    return project


def test_service_gets_exactly_the_published_family_members(
    index: PrivateIndex, released: dict[str, Path], service: Path
) -> None:
    packages = lock_packages(service)
    family = {n for n in packages if n.startswith("im-infra-")}
    assert family == {f"im-infra-{s}" for s in RELEASED}
    public = public_registry()
    for name, package in packages.items():
        if name == "chat-service":
            continue
        registry = package["source"].get("registry")
        if name.startswith("im-infra-"):
            short = name.removeprefix("im-infra-")
            assert registry == index.simple_url, f"{name} not from the private index: {package}"
            assert package["version"] == V[short]
            built = released[short] / wheel_name(short)
            assert package["wheels"][0]["hash"] == f"sha256:{sha256(built)}"
        else:
            assert registry == public, f"{name} not from the public index: {package}"

    python = service / ".venv" / "bin" / "python"
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))"
    )
    proc = run([str(python), "-c", code], service, clean_env())
    assert proc.returncode == 0, proc.stderr
    installed = {n for n in json.loads(proc.stdout) if n.startswith("im-infra-")}
    assert installed == {f"im-infra-{s}" for s in RELEASED}
    for short in set(FAMILY) - set(RELEASED):
        proc = run([str(python), "-c", f"import im_infra.{short}"], service, clean_env())
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_installed_cache_runs_its_readme_example_against_redis(
    service: Path, redis_url: str, tmp_path: Path
) -> None:
    python = service / ".venv" / "bin" / "python"
    # The README as the index page shows it: the installed distribution's long description.
    code = "import importlib.metadata as m; print(m.metadata('im-infra-cache').get_payload())"
    proc = run([str(python), "-c", code], service, clean_env())
    assert proc.returncode == 0, proc.stderr
    blocks = re.findall(r"```python\n(.*?)```", proc.stdout, re.DOTALL)
    assert blocks, "cache's README has an example"
    url = urlsplit(redis_url)
    address = f"{url.hostname}:{url.port or 6379}"
    # this test's Redis database, through the config layer the examples document
    config = tmp_path / "config"
    config.mkdir()
    db = int(url.path.strip("/") or 0)
    (config / "redis.yaml").write_text(f"db: {db}\n")
    env = clean_env()
    env.pop("IM_INFRA_ETCD_ENDPOINTS", None)  # no config center: the examples' keyword config
    env["IM_INFRA_CONFIG_DIR"] = str(config)
    for n, example in enumerate(blocks):  # every example on the index page runs as written
        assert 'address="127.0.0.1:6379"' in example, f"example {n} names the machine's Redis"
        example = example.replace('address="127.0.0.1:6379"', f'address="{address}"')
        script = tmp_path / f"example{n}.py"
        probe = "\nimport sys\nprint('grpc imported:', 'grpc' in sys.modules)\n"
        # the application's switch that makes library lines JSON on stdout, to read "db" back
        logging_on = "from im_infra import clog\n\nclog.init('readme-example')\n"
        script.write_text(logging_on + example + probe)
        proc = run([str(python), str(script)], tmp_path, env)
        assert proc.returncode == 0, f"example {n}: " + proc.stdout + proc.stderr
        assert '"msg":"cache created"' in proc.stdout
        assert f'"db":{db}' in proc.stdout
        assert "grpc imported: False" in proc.stdout  # no coord provider used: grpc never loaded


def test_only_pinning_every_family_member_defeats_dependency_confusion(
    index: PrivateIndex, released: dict[str, Path], attacker: Path, tmp_path: Path
) -> None:
    """The pinned service above got the private files although the mirror offers 99.0.0; a
    service pinning only im-infra-cache gets the attacker's clog and coord (uv applies
    ``[tool.uv.sources]`` to declared dependencies only): the reason docs/releasing.md lists
    every family member a package pulls, and the control that shows this test detects it."""
    project = tmp_path / "naive-service"
    project.mkdir()
    (project / "pyproject.toml").write_text(service_pyproject(index, attacker, naive_config()))
    proc = run(["uv", "lock", "--python", sys.executable], project, uv_env(index))
    assert proc.returncode == 0, proc.stderr
    packages = lock_packages(project)
    assert packages["im-infra-cache"]["source"]["registry"] == index.simple_url
    for short in ("clog", "coord"):
        package = packages[f"im-infra-{short}"]
        assert package["version"] == ATTACKER_VERSION
        assert package["source"]["registry"] == str(attacker)


def test_the_docs_show_the_same_configuration_as_the_readme() -> None:
    text = (REPO / "docs" / "releasing.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    docs = tomllib.loads(block.group(1))
    readme = documented_config()
    family = [d for d in docs["project"]["dependencies"] if d.startswith("im-infra-")]
    assert sorted(family) == sorted(readme.dependencies)
    (idx,) = docs["tool"]["uv"]["index"]
    assert (
        (idx["name"], idx["explicit"]) == (readme.index_name, readme.explicit) == ("im-infra", True)
    )
    assert {k: v["index"] for k, v in docs["tool"]["uv"]["sources"].items()} == readme.sources
    # every declared im-infra package is pinned to the private index, and nothing else is
    assert set(readme.sources) == {d.split(">", 1)[0] for d in readme.dependencies}
