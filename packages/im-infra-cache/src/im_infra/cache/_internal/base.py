"""What the blocking and the asyncio cache share beyond the command set: state, scripts, locks,
bloom filters. Multi-step operations are flows handed to the flavour's ``_drive``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from im_infra.cache._internal import bloom
from im_infra.cache._internal.args import KeyPrefix
from im_infra.cache._internal.backend import secrets_of
from im_infra.cache._internal.codec import decode_any
from im_infra.cache._internal.flow import Flow, script_flow
from im_infra.cache._internal.ops import Ops
from im_infra.cache.config import RedisConfig
from im_infra.cache.errors import CacheError
from im_infra.cache.script import Script
from im_infra.cache.serializer import Serializer


def _first(flow: Flow[list[bool]]) -> Flow[bool]:
    return (yield from flow)[0]


def _decoded(flow: Flow[Any]) -> Flow[Any]:
    return decode_any((yield from flow))


class CacheBase(Ops):
    """State and flow-based operations common to Cache and AsyncCache."""

    _lock_class: ClassVar[type[Any]]

    def __init__(
        self, client: Any, *, config: RedisConfig, service: str, serializer: Serializer
    ) -> None:
        self._client = client
        self._execute = client.execute_command
        self._config = config
        self._service = service
        self._prefix = KeyPrefix(config.prefix_for(service))
        self._serializer = serializer
        self._secrets = secrets_of(config)
        self._bloom = bloom.BloomState(config.bloom)
        self._closed = False

    # -- introspection ---
    @property
    def key_prefix(self) -> str:
        """The prefix prepended to every key (``{service}:`` by default)."""
        return self._prefix

    @property
    def service(self) -> str:
        """The service this cache belongs to."""
        return self._service

    @property
    def config(self) -> RedisConfig:
        """The resolved configuration (password is a SecretStr)."""
        return self._config

    @property
    def serializer(self) -> Serializer:
        """The serializer of non-scalar values."""
        return self._serializer

    @property
    def redis(self) -> Any:
        """The underlying redis-py client: an escape hatch that applies NO key prefix and no
        error translation."""
        return self._client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(service={self._service!r}, mode={self._config.mode!r})"

    # -- the hook each flavour implements ---
    def _drive(self, flow: Flow[Any]) -> Any:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError("cache is closed")

    # -- scripts ---
    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return self._drive(_decoded(script_flow(script.lua, script.sha, keys, args)))

    def register_script(self, lua: str) -> Script:
        """Register a Lua script: returns a callable :class:`Script` run by SHA (see there)."""
        return Script(lua, self)

    # -- locks ---
    def lock(
        self,
        name: str,
        ttl: float = 30.0,
        *,
        timeout: float | None = None,
        token: str | None = None,
    ) -> Any:
        """A distributed lock on key ``name`` (prefixed) that expires after ``ttl`` seconds unless
        extended; ``timeout`` is the default acquire timeout; ``token`` the owner token (default:
        a random UUID). Nothing is sent until it is acquired."""
        return self._lock_class(self, name, ttl, timeout=timeout, token=token)

    # -- bloom filters ---
    def _item(self, item: Any) -> bytes:
        value = self._enc(item)
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        return repr(value).encode()  # int and float: their decimal text, as Redis would store it

    def bf_reserve(self, key: str, error_rate: float = 0.01, capacity: int = 100) -> Any:
        """Create an empty bloom filter for ``capacity`` items at ``error_rate`` false positives
        (CacheResponseError when the key exists)."""
        bloom.parameters(error_rate, capacity)
        return self._drive(
            bloom.reserve_flow(self._bloom, self._prefix + key, error_rate, capacity)
        )

    def bf_add(self, key: str, item: Any) -> Any:
        """Add ``item`` (creating a default filter if needed); True when it was not there."""
        return self._drive(
            _first(bloom.add_flow(self._bloom, self._prefix + key, [self._item(item)]))
        )

    def bf_madd(self, key: str, items: Iterable[Any]) -> Any:
        """Add several items; one bool per item (True: it was not there)."""
        data = [self._item(i) for i in items]
        return self._drive(bloom.add_flow(self._bloom, self._prefix + key, data))

    def bf_exists(self, key: str, item: Any) -> Any:
        """True when ``item`` is probably in the filter; False when it surely is not."""
        return self._drive(
            _first(bloom.exists_flow(self._bloom, self._prefix + key, [self._item(item)]))
        )

    def bf_mexists(self, key: str, items: Iterable[Any]) -> Any:
        """:meth:`bf_exists` for several items."""
        data = [self._item(i) for i in items]
        return self._drive(bloom.exists_flow(self._bloom, self._prefix + key, data))

    @property
    def bloom_backend(self) -> str:
        """``module`` (RedisBloom), ``lua`` (the fallback) or ``auto`` (not known yet)."""
        return self._bloom.mode

    def scan(self, cursor: int = 0, match: str = "*", count: int | None = None) -> Any:
        if self._config.mode == "cluster":
            raise CacheError(
                "scan(cursor) steps through one server's keys, and a cluster spreads them over "
                "several: use scan_iter(), which walks every primary"
            )
        return super().scan(cursor, match, count)

    def _scan_nodes(self) -> list[Any]:
        """What a full scan walks: each primary in cluster mode, else the one server (None)."""
        if self._config.mode == "cluster":
            return list(self._client.get_primaries())
        return [None]

    def ping(self) -> Any:
        """PING the server (True)."""
        return self._run(("PING",))
