"""Command building (prefixing, encoding) and reply transforms, without a server."""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any, Literal

import pytest

from im_infra.cache import CacheError, JsonSerializer, PickleSerializer, Script, SerializationError
from im_infra.cache._internal import codec
from im_infra.cache._internal.ops import Ops


class Recorder(Ops):
    """Ops whose _run returns what would be sent, and the reply transform."""

    _mode: Literal["pipeline"]  # (typing: its commands return Any, as a pipeline's do)

    def __init__(self, prefix: str = "svc:") -> None:
        self._prefix = prefix
        self._serializer = JsonSerializer()
        self.scripts: list[tuple[Script, list[str], list[Any]]] = []

    def _run(self, args: tuple[Any, ...], transform: codec.Transform = None) -> Any:
        return args, transform

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        self.scripts.append((script, keys, args))
        return None


class Color(enum.IntEnum):
    RED = 1


@pytest.fixture
def ops() -> Recorder:
    return Recorder()


def args_of(result: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    return result[0]


def test_every_key_is_prefixed(ops: Recorder) -> None:
    assert args_of(ops.get("a")) == ("GET", "svc:a")
    assert args_of(ops.delete("a", "b")) == ("DEL", "svc:a", "svc:b")
    assert args_of(ops.exists("a")) == ("EXISTS", "svc:a")
    assert args_of(ops.mget("a", "b")) == ("MGET", "svc:a", "svc:b")
    assert args_of(ops.mset({"a": 1, "b": "x"})) == ("MSET", "svc:a", 1, "svc:b", "x")
    assert args_of(ops.hget("h", "f")) == ("HGET", "svc:h", "f")
    assert args_of(ops.sadd("s", "m")) == ("SADD", "svc:s", "m")
    assert args_of(ops.zadd("z", {"m": 1.5})) == ("ZADD", "svc:z", 1.5, "m")
    assert args_of(ops.lpush("l", "v")) == ("LPUSH", "svc:l", "v")
    assert args_of(ops.ltrim("l", 0, 9)) == ("LTRIM", "svc:l", 0, 9)


def test_values_scalars_as_is_others_through_the_serializer(ops: Recorder) -> None:
    assert args_of(ops.set("k", b"\x00raw"))[2] == b"\x00raw"
    assert args_of(ops.set("k", "text"))[2] == "text"
    assert args_of(ops.set("k", 42))[2] == 42
    assert args_of(ops.set("k", 1.5))[2] == 1.5
    assert args_of(ops.set("k", Color.RED))[2] == 1
    assert args_of(ops.set("k", True))[2] == b"true"
    assert args_of(ops.set("k", {"a": [1, "é"]}))[2] == '{"a":[1,"é"]}'.encode()
    with pytest.raises(SerializationError, match="object"):
        ops.set("k", object())


def test_set_options(ops: Recorder) -> None:
    assert args_of(ops.set("k", "v", 1.5)) == ("SET", "svc:k", "v", "PX", 1500)
    assert args_of(ops.set("k", "v", timedelta(minutes=1), nx=True)) == (
        "SET",
        "svc:k",
        "v",
        "PX",
        60000,
        "NX",
    )
    assert args_of(ops.set("k", "v", 0)) == ("SET", "svc:k", "v")
    assert args_of(ops.setnx("k", "v")) == ("SET", "svc:k", "v", "NX")
    assert args_of(ops.set("k", "v", xx=True)) == ("SET", "svc:k", "v", "XX")
    with pytest.raises(CacheError, match="exclusive"):
        ops.set("k", "v", nx=True, xx=True)
    with pytest.raises(CacheError, match="positive"):
        ops.set("k", "v", -1)


def test_zset_ranges(ops: Recorder) -> None:
    args, transform = ops.zrange("z", 0, -1, withscores=True)
    assert args == ("ZRANGE", "svc:z", 0, -1, "WITHSCORES")
    assert transform is codec.score_pairs
    args, _ = ops.zrevrange_by_score("z", 10, "(1", offset=2, count=3)
    assert args == ("ZREVRANGEBYSCORE", "svc:z", 10, "(1", "LIMIT", 2, 3)
    args, _ = ops.zadd("z", {"a": 1}, gt=True, nx=True)
    assert args == ("ZADD", "svc:z", "NX", "GT", 1, "a")


def test_scripts_get_prefixed_keys_and_encoded_args(ops: Recorder) -> None:
    script = Script("return 1")
    ops.run_script(script, ["a", "b"], [1, {"x": 1}])
    assert ops.scripts == [(script, ["svc:a", "svc:b"], [1, b'{"x":1}'])]


def test_script_without_owner_needs_a_client() -> None:
    with pytest.raises(TypeError):
        Script("return 1")()


def test_reply_transforms() -> None:
    assert codec.text(None) is None
    assert codec.text(b"h\xc3\xa9") == "hé"
    with pytest.raises(SerializationError, match="bytes"):
        codec.text(b"\xff")
    assert codec.score_pairs([b"a", b"1", b"b", b"2.5"]) == [("a", 1.0), ("b", 2.5)]
    assert codec.pttl(-2) == -2.0
    assert codec.pttl(1500) == 1.5
    assert codec.decode_any([b"a", [b"\xff", 3]]) == ["a", [b"\xff", 3]]
    assert codec.text_dict({b"f": b"v"}) == {"f": "v"}


def test_get_obj_uses_the_serializer(ops: Recorder) -> None:
    _, transform = ops.get_obj("k")
    assert transform(b'{"a":1}') == {"a": 1}
    assert transform(None) is None
    with pytest.raises(SerializationError):
        transform(b"not json")


def test_pickle_serializer_round_trips() -> None:
    s = PickleSerializer()
    assert s.loads(s.dumps({1: (2, 3)})) == {1: (2, 3)}


def test_scan_matches_the_prefix_literally() -> None:
    ops = Recorder(prefix="a*[b]?\\:")
    args, transform = ops.scan(5, "k*", 10)
    assert args == ("SCAN", 5, "MATCH", "a\\*\\[b\\]\\?\\\\:k*", "COUNT", 10)
    assert transform((0, [b"a*[b]?\\:k1"])) == (0, ["k1"])
