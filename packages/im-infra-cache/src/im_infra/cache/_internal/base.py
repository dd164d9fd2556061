"""What the blocking and the asyncio cache share beyond the command set: state, scripts, locks,
bloom filters. Multi-step operations are flows handed to the flavour's ``_drive``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from im_infra.cache._internal import bloom, codec
from im_infra.cache._internal.args import KeyPrefix
from im_infra.cache._internal.backend import secrets_of
from im_infra.cache._internal.codec import Transform, decode_any
from im_infra.cache._internal.command import Reply, command
from im_infra.cache._internal.flow import Cmd, Flow, script_flow
from im_infra.cache._internal.ops import Ops
from im_infra.cache._internal.tracking import Tracker
from im_infra.cache.config import RedisConfig
from im_infra.cache.errors import CacheError
from im_infra.cache.local import MISS, LocalCache
from im_infra.cache.script import Script
from im_infra.cache.serializer import Serializer

if TYPE_CHECKING:
    from im_infra.cache.aside import _AsideOps
    from im_infra.cache.features import SlidingWindow, TokenBucket
    from im_infra.cache.lock import _LockOps
    from im_infra.cache.once import _OnceOps
    from im_infra.cache.ratelimit import _LimiterOps

T = TypeVar("T")
# the handle classes of a flavour (Lock or AsyncLock, ...): what lock(), aside()... return
LockT = TypeVar("LockT", bound="_LockOps")
AsideT = TypeVar("AsideT", bound="_AsideOps")
LimiterT = TypeVar("LimiterT", bound="_LimiterOps")
OnceT = TypeVar("OnceT", bound="_OnceOps")


def _first(flow: Flow[list[bool]]) -> Flow[bool]:
    return (yield from flow)[0]


def _decoded(flow: Flow[Any]) -> Flow[Any]:
    return decode_any((yield from flow))


class CacheBase(Ops, Generic[LockT, AsideT, LimiterT, OnceT]):
    """State and flow-based operations common to Cache and AsyncCache."""

    _lock_class: type[LockT]
    _aside_class: type[AsideT]
    _limiter_class: type[LimiterT]
    _once_class: type[OnceT]
    _untracked: Callable[..., Any]  # with a local cache: the flavour's _run, untracked

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
        self._local: LocalCache | None = None
        self._tracker: Tracker | None = None
        if config.local_cache.prefixes:
            self._enable_local_cache()

    # -- client-side caching (im_infra.cache.local) ---
    def _enable_local_cache(self) -> None:
        cfg = self._config
        local = self._local = LocalCache(cfg.local_cache, self._prefix, self._service)
        self._tracker = Tracker(
            local, cfg.local_cache.ping_interval, cfg.read_timeout, self._secrets
        )
        # the GETs of covered keys go through the local cache; writes drop their keys locally
        self.get = self._local_get_text
        self.get_bytes = self._local_get_bytes
        self.get_obj = self._local_get_obj
        self._untracked = self._run  # GETs of keys not covered: nothing to invalidate
        self._run = self._run_tracked  # type: ignore[method-assign]

    @property
    def local_cache(self) -> LocalCache | None:
        """The client-side cache (None unless ``localCache.prefixes`` is configured)."""
        return self._local

    def _local_get_text(self, key: str) -> Any:
        return self._local_get(key, codec.text)

    def _local_get_bytes(self, key: str) -> Any:
        return self._local_get(key, None)

    def _local_get_obj(self, key: str) -> Any:
        return self._local_get(key, self._load)

    def _local_get(self, key: str, transform: Transform) -> Any:
        full = self._prefix + key
        local = self._local
        assert local is not None
        if not full.startswith(local.prefixes):
            return self._untracked(("GET", full), transform)
        reply = local.lookup(full)
        if reply is not MISS:
            return self._ready(reply if transform is None else transform(reply))
        return self._drive(self._fill_flow(local, full, transform))

    def _fill_flow(self, local: LocalCache, full: str, transform: Transform) -> Flow[Any]:
        self._start_tracking()  # (here: inside the asyncio driver, the loop is running)
        token = local.begin(full)
        try:
            reply = yield Cmd(("GET", full))
        except BaseException:
            if token is not None:
                local.abort(full, token)
            raise
        if token is not None:
            local.put(full, token, reply)
        return reply if transform is None else transform(reply)

    def _ready(self, value: Any) -> Any:
        """``value`` as this flavour returns results (itself, or an awaitable of it)."""
        raise NotImplementedError

    def _start_tracking(self) -> None:
        """Start the tracking connection's loop (once)."""
        raise NotImplementedError

    def _run_tracked(
        self, args: tuple[Any, ...], transform: Transform = None, node: Any = None
    ) -> Any:
        raise NotImplementedError

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
    def _drive(self, flow: Flow[T]) -> Reply[T]:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError("cache is closed")

    def _attempt(
        self,
        args: tuple[Any, ...],
        transform: Callable[[Any], Any],
        recover: Callable[[BaseException, tuple[Any, ...]], Flow[Any] | None],
        context: tuple[Any, ...] = (),
    ) -> Any:
        """Run one command and ``transform`` its reply; if it fails, run the flow
        ``recover(redis-py error, context)`` instead (None: raise the CacheError). The fast path of
        operations whose error handling needs several steps (a limiter's NOSCRIPT reload and
        fallback): no flow machinery unless something went wrong. The failed command counts
        as an error in the metrics even when the flow recovers."""
        raise NotImplementedError

    def _single(self, key: str, make: Callable[[], Flow[Any]]) -> Any:
        """Run ``make()``'s flow once for every concurrent caller of ``key`` (single flight)."""
        raise NotImplementedError

    def _spawn(self, flow: Flow[Any]) -> None:
        """Run ``flow`` in the background."""
        raise NotImplementedError

    def _close_features(self) -> None:
        """Stop the features' background machinery (blocking cache)."""

    async def _aclose_features(self) -> None:
        """Stop the features' background machinery (asyncio cache)."""

    # -- cache-aside, rate limits, idempotency keys ---
    def aside(
        self,
        *,
        ttl: float | None = None,
        not_found_ttl: float | None = None,
        stale_ttl: float | None = None,
        jitter: float | None = None,
        lock: bool | None = None,
        on_undeleted: Callable[[tuple[str, ...]], None] | None = None,
    ) -> AsideT:
        """Cache-aside over this cache (see :mod:`im_infra.cache.aside`); unset arguments come
        from ``redis.yaml`` ``aside`` on every call (live)."""
        return self._aside_class(
            self,
            ttl=ttl,
            not_found_ttl=not_found_ttl,
            stale_ttl=stale_ttl,
            jitter=jitter,
            lock=lock,
            on_undeleted=on_undeleted,
        )

    def limiter(self, name: str, spec: TokenBucket | SlidingWindow | None = None) -> LimiterT:
        """A rate limiter named ``name`` (keys ``ratelimit:{name}:{key}``): ``spec``, else the
        limit ``rateLimit.limits[name]`` of ``redis.yaml`` (read on every call: live)."""
        return self._limiter_class(self, name, spec)

    def once(self, namespace: str) -> OnceT:
        """Idempotency keys under ``namespace`` (keys ``once:{namespace}:{key}``)."""
        return self._once_class(self, namespace)

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
    ) -> LockT:
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

    @command
    def bf_reserve(self, key: str, error_rate: float = 0.01, capacity: int = 100) -> Reply[None]:
        """Create an empty bloom filter for ``capacity`` items at ``error_rate`` false positives
        (CacheResponseError when the key exists)."""
        bloom.parameters(error_rate, capacity)
        return self._drive(
            bloom.reserve_flow(self._bloom, self._prefix + key, error_rate, capacity)
        )

    @command
    def bf_add(self, key: str, item: Any) -> Reply[bool]:
        """Add ``item`` (creating a default filter if needed); True when it was not there."""
        return self._drive(
            _first(bloom.add_flow(self._bloom, self._prefix + key, [self._item(item)]))
        )

    @command
    def bf_madd(self, key: str, items: Iterable[Any]) -> Reply[list[bool]]:
        """Add several items; one bool per item (True: it was not there)."""
        data = [self._item(i) for i in items]
        return self._drive(bloom.add_flow(self._bloom, self._prefix + key, data))

    @command
    def bf_exists(self, key: str, item: Any) -> Reply[bool]:
        """True when ``item`` is probably in the filter; False when it surely is not."""
        return self._drive(
            _first(bloom.exists_flow(self._bloom, self._prefix + key, [self._item(item)]))
        )

    @command
    def bf_mexists(self, key: str, items: Iterable[Any]) -> Reply[list[bool]]:
        """:meth:`bf_exists` for several items."""
        data = [self._item(i) for i in items]
        return self._drive(bloom.exists_flow(self._bloom, self._prefix + key, data))

    @property
    def bloom_backend(self) -> str:
        """``module`` (RedisBloom), ``lua`` (the fallback) or ``auto`` (not known yet)."""
        return self._bloom.mode

    @command
    def scan(
        self, cursor: int = 0, match: str = "*", count: int | None = None
    ) -> Reply[tuple[int, list[str]]]:
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

    @command
    def ping(self) -> Reply[bool]:
        """PING the server (True)."""
        return self._run(("PING",))


SomeCache = CacheBase[Any, Any, Any, Any]
"""A cache of either flavour (what the handles and pipelines hold)."""
