"""Secret references in config documents: resolution, errors, live reloads, the plain-text check.

Pure logic against the local config directory and coord's in-memory etcd; the real backends
(etcd, MariaDB, Redis, the CLI) are in
packages/im-infra-coord/tests/integration/test_secret_refs.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from im_infra import coord
from im_infra.clog.testing import capture_logs
from im_infra.coord import ConfigError, load_component_config
from im_infra.coord._internal.secretref import plaintext_secrets
from im_infra.coord.cli import validate_document
from im_infra.coord.testing import memory_provider

SECRET = "s3cret-Value-91"


class Sasl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mechanism: str = "PLAIN"
    username: str = ""
    password: SecretStr = SecretStr("")


class Replica(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str
    password: SecretStr = SecretStr("")


class Store(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    host: str = "localhost"
    password: SecretStr = SecretStr("")
    short_token: SecretStr = Field(SecretStr(""), alias="shortToken", max_length=4)
    sasl: Sasl = Field(default_factory=Sasl)
    replicas: list[Replica] = Field(default_factory=list)
    pool_size: int = Field(10, alias="poolSize")


class StoreError(ConfigError):
    pass


STORE = coord.Component("store", Store, live_fields=frozenset({"pool_size"}), error=StoreError)


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "conf"
    directory.mkdir()
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(directory))
    monkeypatch.delenv("IM_INFRA_ETCD_ENDPOINTS", raising=False)
    monkeypatch.delenv("IM_INFRA_ENV", raising=False)
    coord.close_default_provider()
    return directory


def load(config_dir: Path, document: str, **overrides: Any) -> Store:
    (config_dir / "store.yaml").write_text(document)
    return load_component_config(STORE, service="svc", overrides=overrides or None)


def failure(config_dir: Path, document: str) -> str:
    with pytest.raises(StoreError) as info:
        load(config_dir, document)
    message = str(info.value)
    assert SECRET not in message
    return message


def test_from_env(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE_PW", SECRET)
    cfg = load(config_dir, "password: {fromEnv: STORE_PW}\n")
    assert cfg.password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (SECRET + "\n", SECRET),  # one trailing newline is stripped, as Kubernetes users expect
        (SECRET + "\r\n", SECRET),
        (SECRET, SECRET),
        (SECRET + "\n\n", SECRET + "\n"),  # only one
        (SECRET + "\r", SECRET + "\r"),  # a carriage return alone is not a newline
        (" " + SECRET + " \n", " " + SECRET + " "),  # nothing else is trimmed
    ],
)
def test_from_file(config_dir: Path, tmp_path: Path, content: str, expected: str) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_bytes(content.encode())
    cfg = load(config_dir, f"password: {{fromFile: {secret_file}}}\n")
    assert cfg.password.get_secret_value() == expected


def test_secret_sections_and_lists(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SASL_USER", "svc-user")
    monkeypatch.setenv("R0_PW", "replica-pw-0")
    (tmp_path / "sasl").write_text("sasl-pw\n")
    cfg = load(
        config_dir,
        "sasl:\n  mechanism: SCRAM-SHA-256\n  username: {fromEnv: SASL_USER}\n"
        f"  password: {{fromFile: {tmp_path / 'sasl'}}}\n"
        "replicas:\n  - host: r0\n    password: {fromEnv: R0_PW}\n  - host: r1\n",
    )
    assert cfg.sasl.username == "svc-user"  # inside a secret section: accepted too
    assert cfg.sasl.password.get_secret_value() == "sasl-pw"
    assert cfg.replicas[0].password.get_secret_value() == "replica-pw-0"
    assert cfg.replicas[1].password.get_secret_value() == ""


def test_global_and_service_documents_both_resolve(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLOBAL_PW", "global-pw")
    monkeypatch.setenv("SVC_PW", "svc-pw")
    (config_dir / "global").mkdir()
    (config_dir / "global" / "store.yaml").write_text("password: {fromEnv: GLOBAL_PW}\n")
    (config_dir / "svc").mkdir()
    (config_dir / "svc" / "store.yaml").write_text("password: {fromEnv: SVC_PW}\n")
    svc = load_component_config(STORE, service="svc")
    other = load_component_config(STORE, service="other")
    assert svc.password.get_secret_value() == "svc-pw"
    assert other.password.get_secret_value() == "global-pw"
    # a missing reference in a layer a later one overrides still fails: the document is wrong
    monkeypatch.delenv("GLOBAL_PW")
    with pytest.raises(StoreError, match="GLOBAL_PW"):
        load_component_config(STORE, service="svc")


def test_missing_variable_names_field_document_and_reference(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    message = failure(config_dir, "sasl:\n  password: {fromEnv: NO_SUCH_PW}\n")
    assert "invalid store (service 'svc') config" in message
    assert "field 'sasl.password'" in message
    assert str(config_dir / "store.yaml") in message
    assert "{fromEnv: NO_SUCH_PW}" in message
    assert "environment variable NO_SUCH_PW is not set" in message
    with pytest.raises(ConfigError):  # the component's error is also coord's shared root
        load(config_dir, "password: {fromEnv: NO_SUCH_PW}\n")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: "{fromFile: " + str(d / "absent") + "}", "cannot read the file: No such file"),
        (lambda d: "{fromFile: " + str(d) + "}", "cannot read the file: Is a directory"),
        (lambda d: "{fromFile: relative/pw}", "the path must be absolute"),
        (lambda d: "{fromFile: " + str(d / "empty") + "}", "the file is empty"),
        (lambda d: "{fromFile: " + str(d / "newline") + "}", "the file is empty"),
        (lambda d: "{fromFile: " + str(d / "binary") + "}", "the file is not UTF-8 text"),
        (lambda d: "{fromFile: " + str(d / "huge") + "}", "the file is larger than 64 KiB"),
        (lambda d: "{fromEnv: EMPTY_PW}", "environment variable EMPTY_PW is empty"),
    ],
)
def test_unusable_references(
    config_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make: Any,
    problem: str,
) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "newline").write_bytes(b"\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + SECRET.encode())
    (tmp_path / "huge").write_bytes(SECRET.encode() * 10_000)
    monkeypatch.setenv("EMPTY_PW", "")
    reference = make(tmp_path)
    message = failure(config_dir, f"password: {reference}\n")
    assert "field 'password'" in message
    assert f"secret reference {reference}" in message
    assert problem in message


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("host: {fromEnv: HOST}\n", "field 'host'"),
        ("replicas:\n  - host: {fromEnv: HOST}\n", "field 'replicas[0].host'"),
    ],
)
def test_references_outside_secret_fields_are_refused(
    config_dir: Path, document: str, problem: str
) -> None:
    message = failure(config_dir, document)
    assert problem in message
    assert "not a secret" in message
    assert "secret fields only" in message


@pytest.mark.parametrize(
    "reference",
    [
        "{fromEnv: A, fromFile: /b}",
        "{fromEnv: A, default: x}",
        "{fromEnv: ''}",
        "{fromEnv: [A]}",
        "{fromFile: null}",
    ],
)
def test_malformed_references(config_dir: Path, reference: str) -> None:
    message = failure(config_dir, f"password: {reference}\n")
    assert "field 'password'" in message
    assert "a secret reference is {fromEnv: NAME} or {fromFile: /path}" in message


def test_a_resolved_secret_never_shows_in_a_validation_error(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONG_TOKEN", SECRET)  # longer than shortToken's max_length
    message = failure(config_dir, "shortToken: {fromEnv: LONG_TOKEN}\n")
    assert "field 'shortToken'" in message


def test_environment_layer_and_overrides_take_values_not_references(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment layer and keyword overrides are outside the shared document already:
    what they hold is the value itself, even when it looks like a reference."""
    monkeypatch.setenv("IM_INFRA_STORE_PASSWORD", "{fromEnv: X}")
    cfg = load(config_dir, "")
    assert cfg.password.get_secret_value() == "{fromEnv: X}"
    monkeypatch.delenv("IM_INFRA_STORE_PASSWORD")
    with pytest.raises(StoreError, match="field 'password' from keyword arguments"):
        load(config_dir, "", password={"fromEnv": "X"})


def test_references_are_read_again_on_every_live_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("first-pw\n")
    document = f"password: {{fromFile: {secret_file}}}\npoolSize: 1\n"
    with memory_provider(service="svc", env="t") as p:
        p.config.set("global/store.yaml", document)
        live = coord.live_config(STORE, coord=p)
        changed = threading.Event()
        live.on_change(lambda old, new: changed.set())
        assert live.value.password.get_secret_value() == "first-pw"

        secret_file.write_text("second-pw\n")  # rotated; nothing reloads until the document does
        assert live.value.password.get_secret_value() == "first-pw"
        p.config.set("global/store.yaml", document)  # the same document, put again
        assert changed.wait(5)
        assert live.value.password.get_secret_value() == "second-pw"

        secret_file.unlink()  # a reload whose reference is gone is rejected: last good stays
        changed.clear()
        with capture_logs() as lines:
            p.config.set("global/store.yaml", document.replace("poolSize: 1", "poolSize: 2"))
            assert not changed.wait(0.5)
        rejected = [line for line in lines if line["msg"].startswith("rejected")]
        assert len(rejected) == 1
        cause = rejected[0]["fields"]["cause"]
        assert "field 'password' from etcd /im-infra/config/t/global/store.yaml" in cause
        assert f"{{fromFile: {secret_file}}}" in cause
        assert "second-pw" not in str(lines)
        assert live.value.password.get_secret_value() == "second-pw"
        assert live.value.pool_size == 1
        with pytest.raises(StoreError, match="cannot read the file"):
            load_component_config(STORE, coord=p)
        live.close()


@pytest.mark.parametrize(
    ("document", "fields"),
    [
        ({"password": "pw"}, ["password"]),
        ({"password": 1234}, ["password"]),
        ({"sasl": {"mechanism": "PLAIN", "username": "u", "password": "pw"}}, ["sasl.password"]),
        ({"replicas": [{"host": "h"}, {"host": "h2", "password": "x"}]}, ["replicas[1].password"]),
        ({"address": "redis://app:pw@cache:6379/0"}, ["address"]),
        ({"address": "redis://:pw@cache:6379/0"}, ["address"]),
        ({"dsn": "host=db user=im password=pw"}, ["dsn"]),
        ({"dsn": "postgresql://im:pw@db/im"}, ["dsn"]),
        ({"extra": {"sasl.password": "pw"}}, ["extra.sasl.password"]),
        ({"password": {"fromEnv": "PW"}, "sasl": {"password": {"fromFile": "/s"}}}, []),
        ({"password": "", "sentinelPassword": None, "dsn": "postgresql://im@db/im"}, []),
        ({"sasl": {"mechanism": "SCRAM-SHA-256", "username": "svc"}}, []),
        ({"address": "redis://cache:6379/0", "tokenBucket": True}, []),
    ],
)
def test_plaintext_secrets(document: dict[str, Any], fields: list[str]) -> None:
    assert plaintext_secrets(document) == fields


def test_cli_validation_refuses_plaintext_and_accepts_references() -> None:
    key = "/im-infra/config/dev/global/db.yaml"
    with pytest.raises(ConfigError) as info:
        validate_document(key, b"driver: postgresql\nhost: db\npassword: hunter2-pw\n")
    message = str(info.value)
    assert "holds plain-text secrets in 'password'" in message
    assert "--allow-plaintext" in message
    assert "nothing was written" in message
    assert "hunter2-pw" not in message
    plain = b"driver: postgresql\nhost: db\npassword: hunter2-pw\n"
    assert validate_document(key, plain, allow_plaintext=True) == "db"
    referenced = b"driver: postgresql\nhost: db\npassword: {fromEnv: DB_PASSWORD}\n"
    assert validate_document(key, referenced) == "db"  # checked, not read: DB_PASSWORD unset
    with pytest.raises(ConfigError, match=r"field 'host'.*not a secret"):
        validate_document(key, b"host: {fromEnv: DB_HOST}\n")
    with pytest.raises(ConfigError, match="field 'poolSize'"):  # the schema still applies
        validate_document(key, b"password: {fromEnv: DB_PASSWORD}\npoolSize: many\n")
    # documents of no known component are checked for plain-text secrets too
    with pytest.raises(ConfigError, match="'token'"):
        validate_document("/im-infra/config/dev/global/other.yaml", b"token: abc123\n")
