"""Config center: YAML/JSON documents in etcd under ``/im-infra/config/{env}/``.

Keys are relative to the environment's root (``global/kafka.yaml``, ``im-logic/kafka.yaml``);
a key starting with ``/`` is an absolute etcd key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from im_infra.clog.lifecycle import Closing
from im_infra.coord._internal.documents import (
    CONFIG_ROOT,
    config_root,
    dump_document,
    parse_document,
)
from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.hub import ConfigHub
from im_infra.coord._internal.model import Compare, KeyValue, PutOp, WatchEvent
from im_infra.coord._internal.watch import WatchLoop
from im_infra.coord.component import Component
from im_infra.coord.component_config import LiveConfig, Resolver
from im_infra.coord.errors import ConfigError, CoordUnavailable
from im_infra.coord.types import ConfigEntry, ConfigEvent

__all__ = [
    "CONFIG_ROOT",
    "ConfigEntry",
    "ConfigEvent",
    "ConfigWatch",
    "EtcdConfigManager",
    "config_root",
]

M = TypeVar("M", bound=BaseModel)


class ConfigWatch(Closing):
    """Handle of a running config watch; ``cancel()`` (or ``close()``, or leaving a ``with``
    block) stops it. Idempotent."""

    def __init__(self, loop: WatchLoop, on_cancel: Callable[[ConfigWatch], None]) -> None:
        self._loop = loop
        self._on_cancel = on_cancel

    @property
    def revision(self) -> int | None:
        """The last revision delivered to the callback."""
        return self._loop.revision

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the stream is established (useful before writing in tests)."""
        return self._loop.connected.wait(timeout)

    def cancel(self) -> None:
        self._loop.stop()
        self._on_cancel(self)

    def close(self) -> None:
        self.cancel()


def _encode(key: str, value: str | bytes | Mapping[str, Any]) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return dump_document(dict(value), key).encode("utf-8")


class EtcdConfigManager(Closing):
    """The etcd-backed :class:`~im_infra.coord.ConfigManager` (closed by its provider; also a
    context manager)."""

    def __init__(self, client: EtcdClient, env: str, service: str | None) -> None:
        self._client = client
        self.env = env
        self.service = service
        self.root = config_root(env)
        self._watches: list[ConfigWatch] = []
        self._live: list[LiveConfig[Any]] = []
        self._hub = ConfigHub(client, self.root)
        self._lock = threading.RLock()  # re-entrant: a GC finalizer may close a subscriber
        self._closed = False

    def key(self, key: str) -> str:
        """The absolute etcd key for ``key``."""
        if not key:
            raise ConfigError("config key must not be empty")
        return key if key.startswith("/") else self.root + key

    def _relative(self, absolute: str) -> str:
        return absolute[len(self.root) :] if absolute.startswith(self.root) else absolute

    def _entry(self, kv: KeyValue) -> ConfigEntry:
        return ConfigEntry(
            self._relative(kv.key), kv.value, kv.mod_revision, kv.create_revision, kv.version
        )

    def get(self, key: str) -> ConfigEntry | None:
        """The stored document, or None when the key does not exist."""
        kv = self._client.get(self.key(key))
        return None if kv is None else self._entry(kv)

    def get_document(self, key: str) -> dict[str, Any] | None:
        """The document parsed (YAML, or JSON for .json keys); None when absent."""
        entry = self.get(key)
        return None if entry is None else entry.document()

    def set(self, key: str, value: str | bytes | Mapping[str, Any]) -> int:
        """Store ``value`` (text, bytes, or a mapping serialised as YAML/JSON by the key's
        extension); returns the new revision. Text for a .yaml/.yml/.json key must parse."""
        data = _encode(key, value)
        if key.endswith((".yaml", ".yml", ".json")):
            parse_document(data, key)
        return self._client.put(self.key(key), data)

    def delete(self, key: str) -> bool:
        """Delete ``key``; True when it existed."""
        return self._client.delete(self.key(key)) > 0

    def list(self, prefix: str = "") -> list[ConfigEntry]:
        """Every document whose key starts with ``prefix`` (relative to the env root)."""
        absolute = self.key(prefix) if prefix else self.root
        return [self._entry(kv) for kv in self._client.range(absolute, prefix=True).kvs]

    def compare_and_set(
        self, key: str, value: str | bytes | Mapping[str, Any], expected_revision: int
    ) -> bool:
        """Store ``value`` only if the key's mod revision is still ``expected_revision``
        (0: only if the key does not exist). Returns False when someone else changed it."""
        data = _encode(key, value)
        if key.endswith((".yaml", ".yml", ".json")):
            parse_document(data, key)
        absolute = self.key(key)
        result = self._client.txn(
            [Compare(absolute, "mod", "==", expected_revision)], [PutOp(absolute, data)]
        )
        return result.succeeded

    def watch(
        self,
        key: str,
        callback: Callable[[ConfigEvent], None],
        *,
        prefix: bool = False,
        start_revision: int | None = None,
    ) -> ConfigWatch:
        """Call ``callback(event)`` (on a background thread) for every change of ``key`` (every
        key under it with ``prefix``) from ``start_revision`` on (default: from now). Survives
        stream errors and etcd restarts without missing an update; if the history it needs was
        compacted, it goes on from the oldest revision etcd kept (a warning is logged).

        The start revision is fixed before this returns: a change made right after it returns
        is delivered. (When etcd does not answer now, the watch starts from the revision it
        reads once etcd answers.)"""
        absolute = self.key(key) if key or not prefix else self.root
        first: int | None = None
        if start_revision is not None:
            first = start_revision - 1
        else:
            try:
                first = self._client.range(absolute, prefix=prefix, count_only=True).revision
            except CoordUnavailable:
                first = None  # the loop's resync reads it once etcd answers

        def on_events(events: list[WatchEvent]) -> None:
            for ev in events:
                entry = self._entry(ev.kv) if ev.kind == "put" else None
                callback(ConfigEvent(ev.kind, self._relative(ev.kv.key), entry, ev.kv.mod_revision))

        def resync() -> int:
            # Start from the current revision: only changes from now on are reported.
            return self._client.range(absolute, prefix=prefix, count_only=True).revision

        loop = WatchLoop(
            self._client,
            absolute,
            prefix=prefix,
            on_events=on_events,
            resync=resync,
            name=f"config:{absolute}",
            start_revision=first,
            resume_after_compaction=True,
        )
        handle = ConfigWatch(loop, self._forget)
        with self._lock:
            self._watches.append(handle)
        loop.start()
        return handle

    def _forget(self, handle: ConfigWatch) -> None:
        with self._lock:
            if handle in self._watches:
                self._watches.remove(handle)

    def component(
        self,
        component: Component[M] | str,
        model: type[M] | None = None,
        *,
        service: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> LiveConfig[M]:
        """A live, validated view of ``component``'s config for ``service`` (the provider's by
        default), kept current by this manager's one shared watch; see
        :class:`~im_infra.coord.LiveConfig`. ``component`` is a :class:`Component` (or a
        document name with its ``model``)."""
        spec = _as_component(component, model)
        svc = service or self.service
        if not svc:
            raise ConfigError(
                f"{spec.name} config needs a service name: pass service=... or connect(service=...)"
            )
        resolver = Resolver(spec, svc, env=self.env, overrides=overrides)
        live = LiveConfig(resolver, client=self._client, hub=self._hub, on_close=self._drop_live)
        with self._lock:
            self._live.append(live)
        return live

    def _drop_live(self, live: LiveConfig[Any]) -> None:
        with self._lock:
            if live in self._live:
                self._live.remove(live)

    def close(self) -> None:
        """Stop every watch and live config started here (idempotent)."""
        with self._lock:
            watches, self._watches = self._watches, []
            live, self._live = self._live, []
        for w in watches:
            w._loop.stop()
        for lc in live:
            lc.close()
        self._hub.close()


def _as_component(component: Component[M] | str, model: type[M] | None) -> Component[M]:
    if isinstance(component, Component):
        return component
    if model is None:
        raise ConfigError(f"component {component!r} given by name needs its model")
    return Component(component, model)
