"""The GitHub workflows agree with the workspace: release tags, build matrix, hardening.

check-jsonschema and zizmor (run by .ci/run and the CI lint job) check the workflows' structure
and security; these tests check what they cannot know: that every package can be released by its
tag and is built by CI.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from .conftest import Package

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert isinstance(on, dict), f"unexpected `on:` {on!r}"
    return on


def github_glob(pattern: str) -> re.Pattern[str]:
    """A GitHub Actions ref filter pattern as a regex (the subset the workflows use: literal
    characters, `*` for anything but `/`, `**` for anything)."""
    if re.search(r"[?+\[\]!]", pattern):
        raise ValueError(f"filter pattern {pattern!r} uses syntax this test does not model")
    out = ""
    for token in re.split(r"(\*\*|\*)", pattern):
        out += {"**": ".*", "*": "[^/]*"}.get(token, re.escape(token))
    return re.compile(out)


def release_tag_matches(tag: str) -> bool:
    tags = triggers(load("release.yml"))["push"]["tags"]
    return any(github_glob(p).fullmatch(tag) for p in tags)


def release_tag_regex() -> re.Pattern[str]:
    return re.compile(load("release.yml")["env"]["TAG_REGEX"])


# ------------------------------------------------------------------------------- release.yml
def test_every_package_tag_triggers_the_release(packages: list[Package]) -> None:
    for p in packages:
        tag = f"{p.dist_name}-v{p.version}"
        assert release_tag_matches(tag), f"{tag} does not match release.yml's on.push.tags"
        m = release_tag_regex().match(tag)
        assert m is not None, f"{tag} does not match release.yml's TAG_REGEX"
        assert (m.group(1), m.group(2)) == (p.short, p.version)
        assert (WORKFLOWS.parents[1] / "packages" / f"im-infra-{m.group(1)}").is_dir()


@pytest.mark.parametrize(
    "tag",
    ["v0.1.0", "im-infra-clog-0.1.0", "im-infra-clog-v0.1", "im-infra--v0.1.0", "clog-v1.0.0"],
)
def test_malformed_tags_are_refused(tag: str) -> None:
    assert release_tag_regex().match(tag) is None


def test_pre_release_tags_parse() -> None:
    m = release_tag_regex().match("im-infra-mq-v1.2.0rc1")
    assert m is not None
    assert (m.group(1), m.group(2)) == ("mq", "1.2.0rc1")


def test_glob_model() -> None:
    assert github_glob("im-infra-*-v*").fullmatch("im-infra-clog-v0.1.0")
    assert not github_glob("im-infra-*-v*").fullmatch("im-infra-clog-0.1.0")
    assert not github_glob("a*").fullmatch("ab/c")
    assert github_glob("a**").fullmatch("ab/c")
    with pytest.raises(ValueError, match="does not model"):
        github_glob("v[0-9]+")


def test_release_builds_one_package_and_publishes_to_the_private_index() -> None:
    # scripts/release runs `uv build --package` and `uv publish` (tests/release/)
    text = (WORKFLOWS / "release.yml").read_text()
    assert 'scripts/release "${GITHUB_REF_NAME}" --build-only' in text
    assert "--publish-only --out-dir dist --index im-infra-private" in text


# ------------------------------------------------------------------------------- ci.yml
def test_ci_builds_every_package(packages: list[Package]) -> None:
    matrix = load("ci.yml")["jobs"]["build"]["strategy"]["matrix"]["package"]
    assert sorted(matrix) == sorted(p.short for p in packages)


def test_ci_integration_job_points_at_every_backend() -> None:
    job = load("ci.yml")["jobs"]["integration"]
    assert set(job["services"]) == {"etcd", "kafka", "postgres", "mariadb", "redis"}
    assert {
        "IM_INFRA_ETCD_ENDPOINTS",
        "IM_INFRA_KAFKA_BROKERS",
        "IM_INFRA_REDIS_URL",
        "IM_INFRA_PG_URL",
        "IM_INFRA_MYSQL_URL",
    } <= set(job["env"])
    for name, service in job["services"].items():
        if name != "etcd":  # distroless image: waited for by a step (see ci.yml)
            assert "--health-cmd" in service.get("options", ""), name


# ------------------------------------------------------------------------------- both
@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_hardening(name: str) -> None:
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), (
                f"{name}:{job_name}: pass expressions to run: through env:, not inline"
            )
            uses = step.get("uses")
            if uses is None:
                continue
            assert SHA_PIN.match(uses), f"{name}:{job_name}: {uses} is not pinned by commit SHA"
            if uses.startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, (
                    f"{name}:{job_name}: checkout must set persist-credentials: false"
                )
