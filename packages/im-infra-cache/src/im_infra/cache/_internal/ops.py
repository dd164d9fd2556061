"""Every Redis operation, written once.

:class:`Ops` builds each command (key prefixing, value encoding) and names the transform of its
reply, then hands both to ``_run``. The blocking cache runs the command and returns the value, the
asyncio cache returns an awaitable, a pipeline queues it and returns itself: one implementation of
the semantics for all of them. Public documentation of each method is on the Protocols in
``im_infra.cache.protocols``.

Each command is annotated ``-> Reply[T]``, T being what its reply transform returns (``_run`` is
typed so), and decorated with :func:`~im_infra.cache._internal.command.command`: the type checker
reads ``RedisCache().get`` as returning ``str | None``, ``AsyncRedisCache().get`` as a coroutine of
it, and checks both clients against the Protocols. At run time the decorator is the identity.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from im_infra.cache._internal import codec as c
from im_infra.cache._internal.command import Reply, command
from im_infra.cache.errors import CacheArgumentError, SerializationError
from im_infra.coord.deprecation import warn_renamed

if TYPE_CHECKING:
    from im_infra.cache.script import Script
    from im_infra.cache.serializer import Serializer

_SCALARS = (str, bytes, int, float)
T = TypeVar("T")


def _none(_reply: Any) -> None:
    return None


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


class Ops:
    """The command set shared by Cache, AsyncCache and their pipelines."""

    _prefix: str
    _serializer: Serializer

    # -- the one hook each flavour implements (typed: the transform's result flows into the
    # command's Reply, see _internal/command.py; no transform: the raw redis-py reply) ---
    @overload
    def _run(self, args: tuple[Any, ...]) -> Reply[Any]: ...
    @overload
    def _run(self, args: tuple[Any, ...], transform: Callable[[Any], T]) -> Reply[T]: ...
    def _run(self, args: tuple[Any, ...], transform: c.Transform = None) -> Any:
        raise NotImplementedError

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Reply[Any]:
        raise NotImplementedError

    # -- encoding ---
    def _enc(self, value: Any) -> Any:
        cls = type(value)
        if cls is str or cls is bytes or cls is int or cls is float:
            return value
        if value is None:
            raise CacheArgumentError(
                "value is None: a miss reads as None, so None cannot be stored"
                " (delete the key, or store a value of your own that means 'nothing')"
            )
        if not isinstance(value, bool):  # a bool is not a number here: it is serialized
            if isinstance(value, str | bytes | bytearray | memoryview):
                return value
            if isinstance(value, int):
                return int(value)  # IntEnum and friends: their numeric value
            if isinstance(value, float):
                return float(value)
        try:
            return self._serializer.dumps(value)
        except Exception as exc:
            raise SerializationError(f"cannot serialize a {cls.__name__}: {exc}") from exc

    def _load(self, reply: Any) -> Any:
        if reply is None:
            return None
        try:
            return self._serializer.loads(reply)
        except Exception as exc:
            raise SerializationError(f"cannot deserialize the stored value: {exc}") from exc

    def _keys(self, keys: Iterable[str]) -> list[str]:
        p = self._prefix
        return [p + k for k in keys]

    # -- strings ---
    @command
    def get(self, key: str) -> Reply[str | None]:
        return self._run(("GET", self._prefix + key), c.text)

    @command
    def get_bytes(self, key: str) -> Reply[bytes | None]:
        return self._run(("GET", self._prefix + key))

    @command
    def get_obj(self, key: str) -> Reply[Any]:
        return self._run(("GET", self._prefix + key), self._load)

    @command
    def set(
        self,
        key: str,
        value: Any,
        expiration: float | timedelta | None = None,
        *,
        nx: bool = False,
        xx: bool = False,
    ) -> Reply[bool]:
        if not expiration and not nx and not xx:
            return self._run(("SET", self._prefix + key, self._enc(value)), c.to_bool)
        args: list[Any] = ["SET", self._prefix + key, self._enc(value)]
        if expiration:
            args += ("PX", c.milliseconds(expiration))
        if nx and xx:
            raise CacheArgumentError("set: nx and xx are mutually exclusive")
        if nx:
            args.append("NX")
        elif xx:
            args.append("XX")
        return self._run(tuple(args), c.to_bool)

    @command
    def setnx(
        self, key: str, value: Any, expiration: float | timedelta | None = None
    ) -> Reply[bool]:
        return self.set(key, value, expiration, nx=True)

    @command
    def set_nx(
        self, key: str, value: Any, expiration: float | timedelta | None = None
    ) -> Reply[bool]:
        """Deprecated alias of ``setnx`` (redis-py's name; removed in 0.2.0)."""
        warn_renamed("Cache.set_nx", "setnx", "0.2.0")
        return self.setnx(key, value, expiration)

    @command
    def get_set(self, key: str, value: Any) -> Reply[str | None]:
        return self._run(("GETSET", self._prefix + key, self._enc(value)), c.text)

    @command
    def delete(self, *keys: str) -> Reply[int]:
        return self._run(("DEL", *self._keys(keys)), c.to_int)

    @command
    def exists(self, *keys: str) -> Reply[int]:
        return self._run(("EXISTS", *self._keys(keys)), c.to_int)

    @command
    def incr(self, key: str, amount: int = 1) -> Reply[int]:
        return self._run(("INCRBY", self._prefix + key, amount), c.to_int)

    @command
    def decr(self, key: str, amount: int = 1) -> Reply[int]:
        return self._run(("DECRBY", self._prefix + key, amount), c.to_int)

    @command
    def incr_float(self, key: str, amount: float) -> Reply[float]:
        return self._run(("INCRBYFLOAT", self._prefix + key, amount), c.to_float)

    @command
    def expire(self, key: str, ttl: float | timedelta) -> Reply[bool]:
        return self._run(("PEXPIRE", self._prefix + key, c.milliseconds(ttl)), c.to_bool)

    @command
    def persist(self, key: str) -> Reply[bool]:
        return self._run(("PERSIST", self._prefix + key), c.to_bool)

    @command
    def ttl(self, key: str) -> Reply[float]:
        return self._run(("PTTL", self._prefix + key), c.pttl)

    @command
    def mget(self, *keys: str) -> Reply[list[str | None]]:
        return self._run(("MGET", *self._keys(keys)), c.text_list)

    @command
    def mset(self, mapping: Mapping[str, Any]) -> Reply[None]:
        p = self._prefix
        return self._run(
            ("MSET", *c.flatten_pairs((p + k, self._enc(v)) for k, v in mapping.items())), _none
        )

    @command
    def scan(
        self, cursor: int = 0, match: str = "*", count: int | None = None
    ) -> Reply[tuple[int, list[str]]]:
        return self._run(self._scan_args(cursor, match, count), self._unprefix_scan)

    def _scan_args(self, cursor: int, match: str, count: int | None) -> tuple[Any, ...]:
        args: list[Any] = ["SCAN", cursor, "MATCH", glob_escape(self._prefix) + match]
        if count is not None:
            args += ("COUNT", count)
        return tuple(args)

    def _unprefix_scan(self, reply: Any) -> tuple[int, list[str]]:
        cursor, keys = reply
        if isinstance(cursor, dict):  # redis-py's cluster client, one node: {node: cursor}
            (cursor,) = cursor.values()
        cut = len(self._prefix.encode())
        return int(cursor), [k[cut:].decode() for k in keys]

    # -- hashes ---
    @command
    def hset(self, key: str, field: str, value: Any) -> Reply[int]:
        return self._run(("HSET", self._prefix + key, field, self._enc(value)), c.to_int)

    @command
    def hmset(self, key: str, mapping: Mapping[str, Any]) -> Reply[int]:
        pairs = c.flatten_pairs((f, self._enc(v)) for f, v in mapping.items())
        return self._run(("HSET", self._prefix + key, *pairs), c.to_int)

    @command
    def hsetnx(self, key: str, field: str, value: Any) -> Reply[bool]:
        return self._run(("HSETNX", self._prefix + key, field, self._enc(value)), c.to_bool)

    @command
    def hget(self, key: str, field: str) -> Reply[str | None]:
        return self._run(("HGET", self._prefix + key, field), c.text)

    @command
    def hget_obj(self, key: str, field: str) -> Reply[Any]:
        return self._run(("HGET", self._prefix + key, field), self._load)

    @command
    def hmget(self, key: str, *fields: str) -> Reply[list[str | None]]:
        return self._run(("HMGET", self._prefix + key, *fields), c.text_list)

    @command
    def hgetall(self, key: str) -> Reply[dict[str, str]]:
        return self._run(("HGETALL", self._prefix + key), c.text_dict)

    @command
    def hdel(self, key: str, *fields: str) -> Reply[int]:
        return self._run(("HDEL", self._prefix + key, *fields), c.to_int)

    @command
    def hexists(self, key: str, field: str) -> Reply[bool]:
        return self._run(("HEXISTS", self._prefix + key, field), c.to_bool)

    @command
    def hlen(self, key: str) -> Reply[int]:
        return self._run(("HLEN", self._prefix + key), c.to_int)

    @command
    def hincrby(self, key: str, field: str, amount: int = 1) -> Reply[int]:
        return self._run(("HINCRBY", self._prefix + key, field, amount), c.to_int)

    @command
    def hkeys(self, key: str) -> Reply[list[str]]:
        return self._run(("HKEYS", self._prefix + key), c.text_items)

    @command
    def hvals(self, key: str) -> Reply[list[str]]:
        return self._run(("HVALS", self._prefix + key), c.text_items)

    # -- sets ---
    @command
    def sadd(self, key: str, *members: Any) -> Reply[int]:
        return self._run(("SADD", self._prefix + key, *map(self._enc, members)), c.to_int)

    @command
    def srem(self, key: str, *members: Any) -> Reply[int]:
        return self._run(("SREM", self._prefix + key, *map(self._enc, members)), c.to_int)

    @command
    def smembers(self, key: str) -> Reply[builtins.set[str]]:
        return self._run(("SMEMBERS", self._prefix + key), c.text_set)

    @command
    def sismember(self, key: str, member: Any) -> Reply[bool]:
        return self._run(("SISMEMBER", self._prefix + key, self._enc(member)), c.to_bool)

    @command
    def scard(self, key: str) -> Reply[int]:
        return self._run(("SCARD", self._prefix + key), c.to_int)

    @command
    def spop(self, key: str) -> Reply[str | None]:
        return self._run(("SPOP", self._prefix + key), c.text)

    # -- sorted sets ---
    @command
    def zadd(
        self,
        key: str,
        mapping: Mapping[str, float],
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
    ) -> Reply[int]:
        flags = [name for name, on in (("NX", nx), ("XX", xx), ("GT", gt), ("LT", lt)) if on]
        pairs = c.flatten_pairs((score, self._enc(m)) for m, score in mapping.items())
        return self._run(("ZADD", self._prefix + key, *flags, *pairs), c.to_int)

    @command
    def zrem(self, key: str, *members: Any) -> Reply[int]:
        return self._run(("ZREM", self._prefix + key, *map(self._enc, members)), c.to_int)

    @command
    def zscore(self, key: str, member: Any) -> Reply[float | None]:
        return self._run(("ZSCORE", self._prefix + key, self._enc(member)), c.opt_float)

    @command
    def zincrby(self, key: str, member: Any, amount: float = 1.0) -> Reply[float]:
        return self._run(("ZINCRBY", self._prefix + key, amount, self._enc(member)), c.to_float)

    @command
    def zcard(self, key: str) -> Reply[int]:
        return self._run(("ZCARD", self._prefix + key), c.to_int)

    @command
    def zcount(self, key: str, min: float | str = "-inf", max: float | str = "+inf") -> Reply[int]:
        return self._run(("ZCOUNT", self._prefix + key, min, max), c.to_int)

    @command
    def zrank(self, key: str, member: Any) -> Reply[int | None]:
        return self._run(("ZRANK", self._prefix + key, self._enc(member)), c.opt_int)

    @command
    def zrevrank(self, key: str, member: Any) -> Reply[int | None]:
        return self._run(("ZREVRANK", self._prefix + key, self._enc(member)), c.opt_int)

    def _zrange(self, args: list[Any], withscores: bool) -> Reply[list[Any]]:
        if withscores:
            args.append("WITHSCORES")
            return self._run(tuple(args), c.score_pairs)
        return self._run(tuple(args), c.text_list)

    @command
    def zrange(
        self, key: str, start: int = 0, stop: int = -1, *, withscores: bool = False
    ) -> Reply[list[Any]]:
        return self._zrange(["ZRANGE", self._prefix + key, start, stop], withscores)

    @command
    def zrevrange(
        self, key: str, start: int = 0, stop: int = -1, *, withscores: bool = False
    ) -> Reply[list[Any]]:
        return self._zrange(["ZREVRANGE", self._prefix + key, start, stop], withscores)

    def _zrange_by(
        self,
        command: str,
        key: str,
        bounds: tuple[float | str, float | str],
        withscores: bool,
        offset: int | None,
        count: int | None,
    ) -> Reply[list[Any]]:
        args: list[Any] = [command, self._prefix + key, *bounds]
        if withscores:
            args.append("WITHSCORES")
        if offset is not None or count is not None:
            args += ("LIMIT", offset or 0, -1 if count is None else count)
        return self._run(tuple(args), c.score_pairs if withscores else c.text_list)

    @command
    def zrange_by_score(
        self,
        key: str,
        min: float | str = "-inf",
        max: float | str = "+inf",
        *,
        withscores: bool = False,
        offset: int | None = None,
        count: int | None = None,
    ) -> Reply[list[Any]]:
        return self._zrange_by("ZRANGEBYSCORE", key, (min, max), withscores, offset, count)

    @command
    def zrevrange_by_score(
        self,
        key: str,
        max: float | str = "+inf",
        min: float | str = "-inf",
        *,
        withscores: bool = False,
        offset: int | None = None,
        count: int | None = None,
    ) -> Reply[list[Any]]:
        return self._zrange_by("ZREVRANGEBYSCORE", key, (max, min), withscores, offset, count)

    @command
    def zremrange_by_rank(self, key: str, start: int, stop: int) -> Reply[int]:
        return self._run(("ZREMRANGEBYRANK", self._prefix + key, start, stop), c.to_int)

    @command
    def zremrange_by_score(self, key: str, min: float | str, max: float | str) -> Reply[int]:
        return self._run(("ZREMRANGEBYSCORE", self._prefix + key, min, max), c.to_int)

    # -- lists ---
    @command
    def lpush(self, key: str, *values: Any) -> Reply[int]:
        return self._run(("LPUSH", self._prefix + key, *map(self._enc, values)), c.to_int)

    @command
    def rpush(self, key: str, *values: Any) -> Reply[int]:
        return self._run(("RPUSH", self._prefix + key, *map(self._enc, values)), c.to_int)

    @command
    def lpop(self, key: str) -> Reply[str | None]:
        return self._run(("LPOP", self._prefix + key), c.text)

    @command
    def rpop(self, key: str) -> Reply[str | None]:
        return self._run(("RPOP", self._prefix + key), c.text)

    @command
    def lrange(self, key: str, start: int = 0, stop: int = -1) -> Reply[list[str]]:
        return self._run(("LRANGE", self._prefix + key, start, stop), c.text_items)

    @command
    def ltrim(self, key: str, start: int, stop: int) -> Reply[None]:
        return self._run(("LTRIM", self._prefix + key, start, stop), _none)

    @command
    def llen(self, key: str) -> Reply[int]:
        return self._run(("LLEN", self._prefix + key), c.to_int)

    @command
    def lindex(self, key: str, index: int) -> Reply[str | None]:
        return self._run(("LINDEX", self._prefix + key, index), c.text)

    @command
    def lrem(self, key: str, count: int, value: Any) -> Reply[int]:
        return self._run(("LREM", self._prefix + key, count, self._enc(value)), c.to_int)

    # -- scripts ---
    @command
    def run_script(
        self, script: Script, keys: Iterable[str] = (), args: Iterable[Any] = ()
    ) -> Reply[Any]:
        return self._script(script, self._keys(keys), [self._enc(a) for a in args])
