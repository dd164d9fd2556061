"""Issue #15 item 10: property-based fuzzing (hypothesis) of every configuration document model
and of the mq message/header and cache key inputs. Whatever the input, the only exceptions that
leave a package are its own (cache.CacheError, db.DBError, mq.MQError, coord.CoordError,
uid.UIDError): no TypeError, KeyError, pydantic ValidationError, UnicodeError or crash.

Documents are fed the way services feed them: YAML files in ``$IM_INFRA_CONFIG_DIR`` (also raw,
possibly malformed bytes) and keyword overrides. Field names are drawn from each model's own
fields (camelCase and snake_case, nested sections included) so the fuzzer reaches the
validators, plus arbitrary names. Budget: a few dozen examples per property, no deadline
surprises on a loaded CI machine; the whole file runs in seconds. Needs only the Redis of the
stack (for cache keys)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from im_infra import cache, coord, db, mq, uid
from im_infra.cache import RedisConfig
from im_infra.db import DBConfig
from im_infra.mq.config import KafkaConfig

pytestmark = pytest.mark.integration

BUDGET = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "-1", "1s", "5m", "1h30m", "abc", "127.0.0.1:0", "::1", "x" * 300])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _field_names(model: type[BaseModel]) -> list[str]:
    names: list[str] = []
    for name, info in model.model_fields.items():
        names += [name, to_camel(name)]
        if info.alias:
            names.append(info.alias)
    return names


def _sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The nested models of ``model`` by every spelling of their field name."""
    found: dict[str, type[BaseModel]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for key in (name, to_camel(name), info.alias):
                if key:
                    found[key] = annotation
    return found


def documents(model: type[BaseModel], depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings whose keys are mostly the model's own field names, values anything."""
    keys = st.sampled_from(_field_names(model)) | st.text(max_size=10)
    plain = st.dictionaries(keys, _values, max_size=6)
    sections = _sections(model)
    if depth == 0 or not sections:
        return plain
    nested = st.fixed_dictionaries(
        {}, optional={key: documents(sub, depth - 1) | _values for key, sub in sections.items()}
    )
    return st.tuples(plain, nested).map(lambda pair: {**pair[0], **pair[1]})


_raw_documents = st.binary(max_size=80) | st.sampled_from(
    [b"", b"- a\n- b\n", b"key: [unclosed", b"\xff\xfe", b"a: !!python/object:os.system x", b"42"]
)


@pytest.fixture
def config_dir() -> Iterator[Path]:
    """``$IM_INFRA_CONFIG_DIR`` for one test (its hypothesis examples rewrite the files)."""
    directory = Path(tempfile.mkdtemp(prefix="im-infra-fuzz-"))
    saved = os.environ.get("IM_INFRA_CONFIG_DIR")
    os.environ["IM_INFRA_CONFIG_DIR"] = str(directory)
    yield directory
    if saved is None:
        os.environ.pop("IM_INFRA_CONFIG_DIR", None)
    else:
        os.environ["IM_INFRA_CONFIG_DIR"] = saved
    shutil.rmtree(directory, ignore_errors=True)


def _write(directory: Path, component: str, document: dict[str, Any] | bytes) -> None:
    path = directory / "global" / f"{component}.yaml"
    path.parent.mkdir(exist_ok=True)
    if isinstance(document, bytes):
        path.write_bytes(document)
        return
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        text = "{}\n"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")


Loader = Callable[[dict[str, Any]], Any]


def _loaders() -> dict[str, tuple[type[BaseModel], tuple[type[Exception], ...], Loader]]:
    def load_db(overrides: dict[str, Any]) -> Any:
        provider = db.new("fuzz-svc", **overrides)  # builds the engine too: no connection
        provider.close()

    return {
        "redis": (
            RedisConfig,
            (cache.CacheError,),
            lambda o: cache.load_config("fuzz-svc", overrides=o),
        ),
        "db": (DBConfig, (db.DBError,), load_db),
        "kafka": (KafkaConfig, (mq.MQError,), lambda o: mq.load_config("fuzz-svc", **o)),
    }


LOADERS = _loaders()


def _str_keys(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if isinstance(k, str)}


@pytest.mark.parametrize("component", sorted(LOADERS))
def test_config_documents_fail_only_with_the_packages_errors(
    component: str, config_dir: Path
) -> None:
    model, allowed, load = LOADERS[component]

    @BUDGET
    @given(file_doc=documents(model) | _raw_documents, overrides=documents(model))
    def check(file_doc: dict[str, Any] | bytes, overrides: dict[str, Any]) -> None:
        _write(config_dir, component, file_doc)
        with contextlib.suppress(*allowed):
            load(_str_keys(overrides))
        with contextlib.suppress(*allowed):
            load({})

    check()


class _Probe(BaseModel):
    """A model for coord's own document path (parse, normalise, merge, validate)."""

    name: str = "x"
    limit: int = 1


def test_coord_component_documents_fail_only_with_config_error(config_dir: Path) -> None:
    @BUDGET
    @given(file_doc=documents(_Probe) | _raw_documents, overrides=documents(_Probe))
    def check(file_doc: dict[str, Any] | bytes, overrides: dict[str, Any]) -> None:
        _write(config_dir, "probe", file_doc)
        with contextlib.suppress(coord.ConfigError):
            coord.load_component_config(
                "probe", _Probe, service="fuzz-svc", overrides=_str_keys(overrides)
            )

    check()


@BUDGET
@given(
    endpoints=st.none() | st.text(max_size=30) | st.lists(st.text(max_size=20), max_size=3),
    timeout=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5),
    env=st.none() | st.text(max_size=10),
)
def test_coord_connect_arguments_fail_only_with_coord_errors(
    endpoints: Any, timeout: Any, env: Any
) -> None:
    with contextlib.suppress(coord.CoordError):
        provider = coord.connect(
            endpoints if endpoints is not None else "127.0.0.1:9", timeout=timeout, env=env
        )
        provider.close()


@BUDGET
@given(
    instance_id=_scalars,
    epoch_ms=st.integers(-(2**64), 2**64) | _scalars,
    max_backward_ms=st.integers(-(2**40), 2**40) | _scalars,
)
def test_uid_generator_arguments_fail_only_with_uid_errors(
    instance_id: Any, epoch_ms: Any, max_backward_ms: Any
) -> None:
    with contextlib.suppress(uid.UIDError):
        generator = uid.new_generator(
            instance_id, epoch_ms=epoch_ms, max_backward_ms=max_backward_ms
        )
        with contextlib.suppress(uid.UIDError):
            generator.next_id()


_payloads = (
    st.none()
    | st.binary(max_size=20)
    | st.text(max_size=20)
    | st.integers()
    | st.floats()
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | st.lists(st.integers(), max_size=2)
)
_headers = st.dictionaries(st.text(max_size=6) | st.integers(), _payloads, max_size=3) | _payloads


@pytest.fixture(scope="module")
def producer() -> Iterator[mq.KafkaProducer]:
    p = mq.KafkaProducer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0}, close_timeout=0.1)
    yield p
    p.close()


def test_mq_messages_fail_only_with_mq_errors(producer: mq.KafkaProducer) -> None:
    @BUDGET
    @given(
        topic=st.text(max_size=20) | _payloads,
        key=_payloads,
        value=_payloads,
        headers=_headers,
        partition=st.none() | st.integers(-(2**40), 2**40) | st.text(max_size=3),
    )
    def check(topic: Any, key: Any, value: Any, headers: Any, partition: Any) -> None:
        msg = mq.Message(topic, key=key, value=value, headers=headers, partition=partition)
        with contextlib.suppress(mq.MQError):
            producer.send(msg)
        with contextlib.suppress(mq.MQError):
            producer.send_batch([msg])

    check()


@BUDGET
@given(topics=st.lists(st.text(max_size=10) | _payloads, max_size=3) | _payloads)
def test_mq_subscribe_topics_fail_only_with_mq_errors(topics: Any) -> None:
    consumer = mq.KafkaConsumer(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "fuzz", "log_level": 0}
    )
    consumer.close()  # topics are checked first; valid ones then meet "the consumer is closed"
    with contextlib.suppress(mq.MQError):
        consumer.subscribe(topics, lambda m: None)


@pytest.fixture(scope="module")
def redis_cache(redis_url: str) -> Iterator[cache.Cache]:
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    c = cache.new(
        "it-cache-fuzz",
        address=f"{parts.hostname}:{parts.port or 6379}",
        db=int(parts.path[1:] or 0),
        read_timeout=2.0,
    )
    yield c
    keys = list(c.scan_iter("*"))
    if keys:
        c.delete(*keys)
    c.close()


def test_cache_keys_and_values_fail_only_with_cache_errors(redis_cache: cache.Cache) -> None:
    @BUDGET
    @given(key=st.text(max_size=20) | _payloads, value=_payloads | st.booleans())
    def check(key: Any, value: Any) -> None:
        calls: list[Callable[[], object]] = [
            lambda: redis_cache.set(key, value),
            lambda: redis_cache.get(key),
            lambda: redis_cache.hset(key, key, value),
            lambda: redis_cache.lpush(key, value),
            lambda: redis_cache.delete(key),
            lambda: redis_cache.lock(key).try_acquire(),
            lambda: redis_cache.pipeline().set(key, value).get(key).execute(),
        ]
        for call in calls:
            with contextlib.suppress(cache.CacheError):
                call()

    check()
