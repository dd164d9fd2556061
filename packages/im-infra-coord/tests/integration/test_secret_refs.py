"""Secret references (``{fromEnv: NAME}``, ``{fromFile: /path}``) in documents stored in the
stack's etcd, resolved for db, cache and mq through coord against servers that check the secret:
a MariaDB user with a password (the stack's PostgreSQL trusts every local login, so it would
prove nothing), a Redis started with ``requirepass``; then a live reload after the secret
rotated, the missing-reference error, and ``im-infra-coord config put``'s plain-text refusal."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql  # type: ignore[import-untyped]
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from im_infra import cache, coord, db, mq
from im_infra.cache.config import REDIS
from im_infra.coord.cli import main
from im_infra.db.config import DB

pytestmark = pytest.mark.integration

MARIA_PW = "Maria-ref-pw-" + uuid.uuid4().hex[:8]
REDIS_PW_1 = "Redis-ref-pw-one-" + uuid.uuid4().hex[:8]
REDIS_PW_2 = "Redis-ref-pw-two-" + uuid.uuid4().hex[:8]


@pytest.fixture
def provider(etcd_endpoints: str, unique: str) -> Iterator[coord.EtcdProvider]:
    with coord.connect(etcd_endpoints, service=f"{unique}-svc", env=unique, timeout=3) as p:
        yield p
        p.client.delete(p.config.root, prefix=True)


@pytest.fixture
def maria_user(mysql_url: str, unique: str) -> Iterator[dict[str, Any]]:
    """A throwaway MariaDB user that can only log in with its password (dropped at the end)."""
    url = make_url(mysql_url)
    if not url.drivername.startswith(("mysql", "mariadb")):
        pytest.skip("needs MariaDB/MySQL")
    admin = pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        autocommit=True,
    )
    user = f"ref_{unique}"[:32]
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (MARIA_PW,))
        cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY %s", (MARIA_PW,))
    try:
        yield {
            "driver": "mariadb",
            "host": url.host,
            "port": url.port or 3306,
            "user": user,
            "database": "information_schema",  # every user may use it: no grants to undo
        }
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
        admin.close()


def _yaml(fields: dict[str, Any]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def test_db_password_from_env_against_a_user_that_needs_it(
    provider: coord.EtcdProvider,
    maria_user: dict[str, Any],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variable = f"{unique.upper()}_DB_PASSWORD"
    provider.config.set("global/db.yaml", _yaml({**maria_user, "connectTimeout": 5}))
    provider.config.set(f"{unique}-svc/db.yaml", f"password: {{fromEnv: {variable}}}\n")

    monkeypatch.setenv(variable, MARIA_PW)
    with db.new(coord=provider) as p, p.session() as s:
        assert s.execute(text("SELECT CURRENT_USER()")).scalar_one().startswith(maria_user["user"])

    # the server really checks it: the same document with a wrong secret behind it is refused
    monkeypatch.setenv(variable, "not-the-password")
    with db.new(coord=provider) as p, pytest.raises(db.DBConnectionError) as info:
        p.ping()
    assert "not-the-password" not in str(info.value)

    # and the asyncio flavour resolves the same way
    monkeypatch.setenv(variable, MARIA_PW)

    async def ping() -> None:
        async with db.new_async(coord=provider) as p:
            await p.ping()

    asyncio.run(ping())


def test_missing_reference_is_a_typed_error_naming_field_and_reference(
    provider: coord.EtcdProvider, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = f"{unique.upper()}_PRESENT"
    absent = f"{unique.upper()}_ABSENT"
    monkeypatch.setenv(present, MARIA_PW)
    monkeypatch.delenv(absent, raising=False)
    document = (
        "driver: mariadb\nhost: 127.0.0.1\n"
        f"password: {{fromEnv: {present}}}\n"
        f"replicas:\n  endpoints:\n    - host: 127.0.0.2\n      password: {{fromEnv: {absent}}}\n"
    )
    provider.config.set(f"{unique}-svc/db.yaml", document)
    with pytest.raises(db.ConfigError) as info:
        db.new(coord=provider)
    message = str(info.value)
    assert isinstance(info.value, coord.ConfigError)
    assert "field 'replicas.endpoints[0].password'" in message
    assert f"/im-infra/config/{unique}/{unique}-svc/db.yaml" in message
    assert f"{{fromEnv: {absent}}}" in message
    assert f"environment variable {absent} is not set" in message
    assert MARIA_PW not in message


@pytest.fixture
def no_stack_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's IM_INFRA_REDIS_URL (the environment layer) would win over the document."""
    monkeypatch.delenv("IM_INFRA_REDIS_URL", raising=False)
    monkeypatch.delenv("IM_INFRA_REDIS_ADDRESS", raising=False)
    monkeypatch.delenv("IM_INFRA_REDIS_PASSWORD", raising=False)


@pytest.mark.usefixtures("no_stack_redis")
def test_redis_password_from_file_and_a_live_reload_after_rotation(
    provider: coord.EtcdProvider,
    redis_server_factory: Callable[..., Any],
    tmp_path: Path,
    unique: str,
    wait_for: Callable[[Callable[[], bool], float, str], float],
) -> None:
    server = redis_server_factory("--requirepass", REDIS_PW_1)
    secret = tmp_path / "redis-password"
    secret.write_text(REDIS_PW_1 + "\n")  # as `kubectl create secret` / `echo` write it
    document = f"address: 127.0.0.1:{server.port}\npassword: {{fromFile: {secret}}}\n"
    provider.config.set("global/redis.yaml", document)

    c = cache.new(coord=provider)
    try:
        c.set(f"{unique}:k", "v1")
        assert c.get(f"{unique}:k") == "v1"
    finally:
        c.close()

    live = coord.live_config(REDIS, coord=provider)
    assert live.wait_connected(5)
    changed = threading.Event()
    live.on_change(lambda old, new: changed.set())
    assert live.value.password is not None
    assert live.value.password.get_secret_value() == REDIS_PW_1

    # rotate: the server's password, then the secret file, then the document is put again
    redis.Redis(port=server.port, password=REDIS_PW_1).config_set("requirepass", REDIS_PW_2)
    secret.write_text(REDIS_PW_2 + "\n")
    provider.config.set("global/redis.yaml", document)
    wait_for(changed.is_set, 5, "the live view resolves the reference again")
    assert live.value.password is not None
    assert live.value.password.get_secret_value() == REDIS_PW_2
    live.close()

    c = cache.new(coord=provider)  # a client built now uses the rotated secret
    try:
        assert c.get(f"{unique}:k") == "v1"
    finally:
        c.close()

    # the file gone: a new client fails with the typed error naming field and reference
    secret.unlink()
    with pytest.raises(cache.CacheConfigError) as info:
        cache.new(coord=provider)
    message = str(info.value)
    assert f"field 'password' from etcd /im-infra/config/{unique}/global/redis.yaml" in message
    assert f"{{fromFile: {secret}}}" in message
    assert "cannot read the file: No such file or directory" in message


def test_a_live_reload_after_the_variable_changed(
    provider: coord.EtcdProvider,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    wait_for: Callable[[Callable[[], bool], float, str], float],
) -> None:
    variable = f"{unique.upper()}_SASL_PW"
    monkeypatch.setenv(variable, "first-sasl-pw")
    document = (
        "common:\n  brokers: [127.0.0.1:9]\n  security:\n    sasl:\n      mechanism: PLAIN\n"
        f"      username: svc\n      password: {{fromEnv: {variable}}}\n"
    )
    provider.config.set("global/kafka.yaml", document)
    monkeypatch.delenv(mq.BROKERS_ENV, raising=False)
    cfg = mq.load_config(f"{unique}-svc", coord=provider)
    assert cfg.common.security.sasl is not None
    assert cfg.common.security.sasl.password.get_secret_value() == "first-sasl-pw"

    live = coord.live_config(mq.KAFKA, coord=provider)
    assert live.wait_connected(5)
    monkeypatch.setenv(variable, "second-sasl-pw")
    provider.config.set("global/kafka.yaml", document + "producer:\n  lingerMs: 7\n")

    def rotated() -> bool:
        sasl = live.value.common.security.sasl
        return sasl is not None and sasl.password.get_secret_value() == "second-sasl-pw"

    wait_for(rotated, 5, "the live view reads the variable again")
    assert live.value.producer.linger_ms == 7
    live.close()


@pytest.fixture
def put(
    etcd_endpoints: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    def run(key: str, document: str, *flags: str) -> tuple[int, str]:
        path = tmp_path / "doc.yaml"
        path.write_text(document)
        argv = ["--endpoints", etcd_endpoints, "--env", unique, "config", "put", key, str(path)]
        code = main([*argv, *flags])
        return code, capsys.readouterr().err

    return run


def test_cli_refuses_plaintext_secrets_unless_allowed(
    provider: coord.EtcdProvider, put: Callable[..., tuple[int, str]], unique: str
) -> None:
    plaintext = "driver: postgresql\nhost: db\npassword: Plain-pw-3b9\n"
    code, err = put(f"{unique}-svc/db.yaml", plaintext)
    assert code == 1
    assert "holds plain-text secrets in 'password'" in err
    assert "--allow-plaintext" in err
    assert "nothing was written" in err
    assert "Plain-pw-3b9" not in err
    assert provider.config.get(f"{unique}-svc/db.yaml") is None

    url = "address: redis://app:Url-pw-77c@cache:6379/0\n"
    code, err = put("global/redis.yaml", url)
    assert (code, "'address'" in err, "Url-pw-77c" in err) == (1, True, False)
    assert provider.config.get("global/redis.yaml") is None

    code, err = put(f"{unique}-svc/db.yaml", plaintext, "--allow-plaintext")
    assert code == 0, err
    entry = provider.config.get(f"{unique}-svc/db.yaml")
    assert entry is not None and entry.text == plaintext


def test_cli_stores_references_and_the_services_resolve_them(
    provider: coord.EtcdProvider,
    put: Callable[..., tuple[int, str]],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variable = f"{unique.upper()}_DB_PASSWORD"
    monkeypatch.delenv(variable, raising=False)  # not needed where the document is put
    document = f"driver: postgresql\nhost: db\npassword: {{fromEnv: {variable}}}\n"
    code, err = put(f"{unique}-svc/db.yaml", document)
    assert code == 0, err
    monkeypatch.setenv(variable, "Resolved-pw-5d0")
    cfg = coord.load_component_config(DB, coord=provider)
    assert cfg.password.get_secret_value() == "Resolved-pw-5d0"

    code, err = put(f"{unique}-svc/db.yaml", "host: {fromEnv: DB_HOST}\n")
    assert code == 1
    assert "field 'host'" in err
    assert "not a secret" in err
    entry = provider.config.get(f"{unique}-svc/db.yaml")
    assert entry is not None and entry.text == document  # nothing was written
