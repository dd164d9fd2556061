"""scripts/release without an index: its checks refuse what they must, and the workflow runs it.

The script is loaded as a module (it has no ``.py`` suffix: it is an executable) to test the
checks on broken inputs; a real build of every package must pass them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / "scripts" / "release"
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("im_infra_release_script", str(RELEASE))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up by name
    loader.exec_module(module)
    return module


rel: Any = load_script()


def current_tag(short: str) -> str:
    with (REPO / "packages" / f"im-infra-{short}" / "pyproject.toml").open("rb") as f:
        return f"im-infra-{short}-v{tomllib.load(f)['project']['version']}"


UID_TAG = current_tag("uid")


def run_release(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RELEASE), *args], cwd=REPO, capture_output=True, text=True,
        timeout=240, check=False, env=env,
    )  # fmt: skip


# ------------------------------------------------------------------------------- the workflow
def test_tag_regex_is_the_workflows() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert rel.TAG_REGEX.pattern == workflow["env"]["TAG_REGEX"]


def test_the_workflow_builds_and_publishes_through_the_script() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = {
        job: "\n".join(step.get("run", "") for step in spec["steps"])
        for job, spec in workflow["jobs"].items()
    }
    assert 'scripts/release "${GITHUB_REF_NAME}" --build-only --out-dir dist' in runs["build"]
    assert (
        'scripts/release "${GITHUB_REF_NAME}" --publish-only --out-dir dist '
        "--index im-infra-private"
    ) in runs["publish"]
    all_runs = "\n".join(runs.values())
    assert "uv build" not in all_runs and "uv publish" not in all_runs, "the script's job only"
    publish_env = next(s for s in workflow["jobs"]["publish"]["steps"] if "run" in s and
                       "scripts/release" in s["run"])["env"]  # fmt: skip
    assert set(publish_env) == {"UV_PUBLISH_TOKEN"}


# ------------------------------------------------------------------------------- the tag
@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("v0.1.0", "not of the form"),
        ("im-infra-clog-0.1.0", "not of the form"),
        ("im-infra-nope-v0.1.0", "does not exist"),
        ("im-infra-clog-v9.9.9", "says version 9.9.9"),
    ],
)
def test_bad_tags_are_refused(tag: str, message: str) -> None:
    with pytest.raises(rel.TagError, match=message):
        rel.parse_tag(tag)


def test_every_package_version_parses_and_has_a_changelog_section() -> None:
    for pyproject in sorted((REPO / "packages").glob("*/pyproject.toml")):
        target = rel.parse_tag(current_tag(pyproject.parent.name.removeprefix("im-infra-")))
        rel.check_changelog(target)


def test_a_version_without_changelog_section_is_refused(tmp_path: Path) -> None:
    target = rel.Target("t", "x", "7.7.7", tmp_path)
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## 7.7.70\n\n## Unreleased\n")
    with pytest.raises(rel.ChangelogError, match=r"no '## 7\.7\.7' section"):
        rel.check_changelog(target)
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## 7.7.7\n\nFixed.\n")
    rel.check_changelog(target)


# ------------------------------------------------------------------------------- the files
def test_relative_links_are_found_outside_code() -> None:
    text = (
        "See [docs](docs/x.md), [abs](https://h/d.md), [anchor](#top), ![img](img/a.png),\n"
        '<a href="../y.md">y</a> and `[not](a/link)`.\n\n[ref]: ../z.md\n\n'
        "```python\nx = [a](b)\n```\n"
    )
    assert sorted(rel.relative_links(text)) == ["../y.md", "../z.md", "docs/x.md", "img/a.png"]


@pytest.fixture(scope="module")
def built_uid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    out = tmp_path_factory.mktemp("uid")
    target = rel.parse_tag(UID_TAG)
    rel.build(target, out)
    sdist, wheel = rel.built_files(target, out)
    rel.check_distributions(target, sdist, wheel)  # a real build passes every check
    return target, sdist, wheel


def rewrite_wheel(src: Path, dst: Path, edit: dict[str, bytes | None]) -> None:
    """Copy a wheel, replacing (bytes) or dropping (None) some members, RECORD untouched."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename in edit:
                data = edit[item.filename]
                if data is not None:
                    zout.writestr(item.filename, data)
            else:
                zout.writestr(item, zin.read(item.filename))
        for name, data in edit.items():
            if name not in zin.namelist() and data is not None:
                zout.writestr(name, data)


def test_tampered_or_incomplete_wheels_are_refused(
    built_uid: tuple[Any, Path, Path], tmp_path: Path
) -> None:
    target, sdist, wheel = built_uid
    meta_name = f"{target.stem}.dist-info/METADATA"
    with zipfile.ZipFile(wheel) as whl:
        metadata = whl.read(meta_name).decode()
    cases: dict[str, tuple[dict[str, bytes | None], str]] = {
        "tampered": ({"im_infra/uid/__init__.py": b"evil = 1\n"}, "does not match its RECORD"),
        "stray": ({"im_infra/__init__.py": b""}, "PEP 420"),
        "untyped": ({"im_infra/uid/py.typed": None}, "py.typed is missing"),
        "no urls": (
            {meta_name: "\n".join(
                ln for ln in metadata.splitlines() if not ln.startswith("Project-URL")
            ).encode()},
            "Project-URL 'Repository' is missing",
        ),
        "relative link": (
            {meta_name: (metadata + "\nSee [the docs](../../docs/uid.md).\n").encode()},
            "broken on an index page",
        ),
        "unbounded dep": (
            {meta_name: re.sub(r"(Requires-Dist: im-infra-clog)>=\S+", r"\1", metadata).encode()},
            "has no lower bound",
        ),
    }  # fmt: skip
    for case, (edit, message) in cases.items():
        broken = tmp_path / case / wheel.name
        broken.parent.mkdir()
        rewrite_wheel(wheel, broken, edit)
        with pytest.raises(rel.DistributionCheckError, match=message):
            rel.check_distributions(target, sdist, broken)


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_PUBLISH_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("UV_PUBLISH_TOKEN", "pypi-tok-123")
    text = "auth hunter2-secret failed for https://bob:pw@idx/ with pypi-tok-123"
    assert rel.redact(text) == "auth *** failed for https://bob:***@idx/ with ***"


def test_publishing_without_credentials_is_refused_before_building(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_PUBLISH")}
    proc = run_release(UID_TAG, "--out-dir", str(tmp_path / "d"),
                       "--index", "im-infra-private", env=env)  # fmt: skip
    assert proc.returncode == 1
    assert "ConfigurationError: no publish credentials" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_build_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "old.whl").write_bytes(b"stale")
    proc = run_release(UID_TAG, "--build-only", "--out-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "is not empty" in proc.stderr


def test_usage_errors() -> None:
    proc = run_release(UID_TAG)
    assert proc.returncode == 2
    assert "name the index" in proc.stderr
    assert shutil.which("uv") is not None


def test_dependents_lower_bounds_are_released_versions_of_the_family() -> None:
    """Every im-infra requirement has a lower bound that the workspace's version satisfies:
    a dependent never requires a clog/coord newer than the one in the same commit."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    versions = {
        p.parent.name: Version(tomllib.loads(p.read_text())["project"]["version"])
        for p in (REPO / "packages").glob("*/pyproject.toml")
    }
    checked = 0
    for pyproject in sorted((REPO / "packages").glob("*/pyproject.toml")):
        for dep in tomllib.loads(pyproject.read_text())["project"].get("dependencies", []):
            req = Requirement(dep)
            if not req.name.startswith("im-infra-"):
                continue
            lower = [s for s in req.specifier if s.operator == ">="]
            assert lower, f"{pyproject.parent.name}: {dep} has no lower bound"
            assert Version(lower[0].version) <= versions[req.name], (
                f"{pyproject.parent.name} requires {dep}, newer than {req.name} "
                f"{versions[req.name]} in the workspace"
            )
            assert versions[req.name] in req.specifier, f"{dep} excludes the workspace version"
            checked += 1
    assert checked >= 9  # db, mq, uid, cache need clog and coord; coord needs clog


def test_package_readmes_have_no_links_that_break_on_an_index_page() -> None:
    """What the release check refuses, caught when the README is edited, not at release time."""
    for readme in sorted((REPO / "packages").glob("*/README.md")):
        assert rel.relative_links(readme.read_text()) == [], readme


def test_an_unreachable_index_is_a_clear_refusal(tmp_path: Path) -> None:
    from im_infra_testsupport.backends import free_port

    port = free_port()  # nothing listens there
    env = dict(os.environ, UV_PUBLISH_USERNAME="u", UV_PUBLISH_PASSWORD="secret-pw-123")
    proc = run_release(UID_TAG, "--out-dir", str(tmp_path / "d"),
                       "--publish-url", f"http://127.0.0.1:{port}/",
                       "--simple-url", f"http://127.0.0.1:{port}/simple/", env=env)  # fmt: skip
    assert proc.returncode == 1
    assert "PublishError: cannot reach the index" in proc.stderr
    assert "secret-pw-123" not in proc.stdout + proc.stderr


def test_publish_only_without_a_build_is_refused(tmp_path: Path) -> None:
    env = dict(os.environ, UV_PUBLISH_TOKEN="tok-secret-456")
    proc = run_release(UID_TAG, "--publish-only", "--out-dir", str(tmp_path / "missing"),
                       "--index", "im-infra-private", env=env)  # fmt: skip
    assert proc.returncode == 1
    assert "BuildError" in proc.stderr and "does not exist" in proc.stderr


def test_project_urls_point_into_one_repository() -> None:
    """One repository URL for the family; documentation and changelog pages exist in it."""
    repos = set()
    for pyproject in sorted((REPO / "packages").glob("*/pyproject.toml")):
        urls = tomllib.loads(pyproject.read_text())["project"]["urls"]
        assert set(urls) >= {"Repository", "Documentation", "Changelog"}, pyproject
        base = urls["Repository"].rstrip("/")
        repos.add(base)
        for label in ("Documentation", "Changelog"):
            prefix = f"{base}/blob/main/"
            assert urls[label].startswith(prefix), (pyproject, label)
            path = urls[label].removeprefix(prefix).split("#", 1)[0]
            assert (REPO / path).is_file(), f"{pyproject}: {label} -> {path} does not exist"
        readme = (pyproject.parent / "README.md").read_text()
        for link in re.findall(rf"\]\({re.escape(base)}/blob/main/([^)#]+)", readme):
            assert (REPO / link).is_file(), f"{pyproject.parent.name} README links to {link}"
    assert len(repos) == 1, repos


def test_install_footprint_of_clog_alone_has_no_grpc() -> None:
    """scripts/install-footprint (the figures of docs/releasing.md) on the one package that must
    not pull coord's gRPC stack."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "install-footprint"), "clog"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| `pip install")]
    assert len(rows) == 1, proc.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[0] == "`pip install im-infra-clog`"
    assert int(cells[1]) >= 2  # clog and its third-party dependencies
    assert cells[3] == "0.0 MiB", "clog alone installs grpcio/protobuf/etcd-sdk-python"
    assert cells[4] == "clog"


def test_build_only_as_the_workflow_runs_it(tmp_path: Path) -> None:
    """Relative --out-dir from the repository root, and the job outputs for the publish job."""
    output = tmp_path / "github_output"
    out_dir = tmp_path / "dist"
    env = dict(os.environ, GITHUB_OUTPUT=str(output))
    proc = run_release(UID_TAG, "--build-only", "--out-dir", os.path.relpath(out_dir, REPO),
                       env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    version = UID_TAG.removeprefix("im-infra-uid-v")
    assert output.read_text() == f"package=im-infra-uid\nversion={version}\n"
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == [
        f"im_infra_uid-{version}-py3-none-any.whl",
        f"im_infra_uid-{version}.tar.gz",
    ]
