"""A component's configuration for one service: layering, validation, fallback, live updates.

Resolution for component C of service S in environment E (later wins, deep-merged):

1. the component model's defaults (the seed's values),
2. ``/im-infra/config/{E}/global/{C}.yaml`` in etcd,
3. ``/im-infra/config/{E}/{S}/{C}.yaml`` in etcd,
4. the environment: ``IM_INFRA_<C>_<FIELD>`` (nested fields joined by ``__``) and the
   component's aliases (``IM_INFRA_KAFKA_BROKERS``, ``IM_INFRA_REDIS_URL``),
5. keyword overrides from code.

Secret references in the documents (``password: {fromEnv: DB_PASSWORD}``,
``{fromFile: /run/secrets/db}``) are read each time the config is built: at load time and on
every live reload.

Without a config center, or when etcd is unreachable, the directory ``$IM_INFRA_CONFIG_DIR``
replaces 2-3 (``global/{C}.yaml``, else ``{C}.yaml``; then ``{S}/{C}.yaml``). docs/configuration.md
is the user-facing statement of these rules.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from im_infra.clog.lifecycle import Closing, on_close
from im_infra.coord._internal import metrics as _metrics
from im_infra.coord._internal.documents import (
    CONFIG_DIR_VAR,
    Layer,
    document_keys,
    parse_document,
    validate_layers,
)
from im_infra.coord._internal.envlayer import env_layers
from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.hub import ConfigHub, Subscription
from im_infra.coord._internal.log import log
from im_infra.coord._internal.model import GetOp, KeyValue, WatchEvent
from im_infra.coord._internal.redact import redact, secrets_in
from im_infra.coord._internal.secretref import resolve_references
from im_infra.coord.component import Component
from im_infra.coord.errors import ConfigError, CoordUnavailable

M = TypeVar("M", bound=BaseModel)

_log = log.named("config")

Source = Literal["etcd", "local", "defaults"]

_said: set[tuple[str, ...]] = set()
_said_lock = threading.Lock()


def log_once(level: str, message: str, *key: str, **fields: Any) -> None:
    """Log ``message`` once per process for ``key`` (degradation notices, restart notices)."""
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    getattr(_log, level)(message, **fields)


def local_layers(component: str, service: str, config_dir: str | None = None) -> list[Layer]:
    """The documents found in the local config directory (``$IM_INFRA_CONFIG_DIR``)."""
    directory = config_dir if config_dir is not None else os.environ.get(CONFIG_DIR_VAR)
    if not directory:
        return []
    base = Path(directory)
    if not base.is_dir():
        raise ConfigError(f"{CONFIG_DIR_VAR}={directory} is not a directory")
    layers: list[Layer] = []
    for path in (base / "global" / f"{component}.yaml", base / f"{component}.yaml"):
        if path.is_file():
            layers.append(_read_file(path))
            break
    service_path = base / service / f"{component}.yaml"
    if service_path.is_file():
        layers.append(_read_file(service_path))
    return layers


def _read_file(path: Path) -> Layer:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    return Layer(str(path), parse_document(raw, str(path)))


class Resolver(Generic[M]):
    """Everything about one component's config for one service except the etcd I/O: the
    document keys, the environment and override layers, validation and the required check."""

    def __init__(
        self,
        spec: Component[M],
        service: str,
        *,
        env: str,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.service = service
        try:
            self.keys = document_keys(env, service, spec.name)
        except ConfigError as exc:
            raise spec.error(str(exc)) from None
        self._environ = os.environ if environ is None else environ
        self._secrets: set[str] = set()
        try:
            self._env = env_layers(spec.name, spec.model, self._environ, spec.env_aliases)
        except ConfigError as exc:
            raise self._error(exc) from None
        self._overrides = [Layer("keyword arguments", dict(overrides))] if overrides else []
        for layer in self._env + self._overrides:
            self._secrets |= secrets_in(layer.data)

    def _error(self, exc: ConfigError, secrets: set[str] | None = None) -> ConfigError:
        """``exc`` as the component's own config error, secrets redacted."""
        return self.spec.error(redact(str(exc), self._secrets | (secrets or set())))

    def _resolve(self, documents: list[Layer]) -> tuple[list[Layer], set[str]]:
        """The documents with their secret references (``{fromEnv: ...}``, ``{fromFile: ...}``)
        replaced by the secrets, read now; and those secrets."""
        resolved: list[Layer] = []
        found: set[str] = set()
        for layer in documents:
            try:
                data, secrets = resolve_references(layer.data, layer.source, self._environ)
            except ConfigError as exc:
                what = f"{self.spec.name} (service {self.service!r})"
                raise self._error(ConfigError(f"invalid {what} config: {exc}"), found) from None
            resolved.append(Layer(layer.source, data))
            found |= secrets
        return resolved, found

    def etcd_layers(self, raw: Mapping[str, bytes | None]) -> list[Layer]:
        layers = []
        for key in self.keys:
            data = raw.get(key)
            if data is not None:
                try:
                    layers.append(Layer(f"etcd {key}", parse_document(data, key)))
                except ConfigError as exc:
                    raise self._error(exc) from None
        return layers

    def local_layers(self) -> list[Layer]:
        try:
            return local_layers(self.spec.name, self.service)
        except ConfigError as exc:
            raise self._error(exc) from None

    def build(self, documents: list[Layer]) -> M:
        """Validate defaults < ``documents`` < environment < overrides; ConfigError (secrets
        redacted) naming the document, the field and the problem."""
        resolved, secrets = self._resolve(documents)
        layers = resolved + self._env + self._overrides
        try:
            config = validate_layers(
                self.spec.model, layers, f"{self.spec.name} (service {self.service!r})"
            )
            sources = ", ".join(layer.source for layer in layers) or "no document"
            self.spec.check_required(config, sources)
        except ConfigError as exc:
            raise self._error(exc, secrets) from None
        return config


def _changed_paths(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    out: list[str] = []
    for name in type(old).model_fields:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        path = prefix + name
        if isinstance(a, BaseModel) and isinstance(b, BaseModel) and type(a) is type(b):
            out.extend(_changed_paths(a, b, path + "."))
        else:
            out.append(path)
    return out


class LiveConfig(Generic[M], Closing):
    """A component's validated config for one service, kept current by its provider's watch.

    ``value`` is always a valid model instance. When a document changes, the config is resolved
    again; if the result validates and differs, ``value`` is replaced and every ``on_change``
    hook is called with ``(old, new)`` on the watch thread. Fields the component does not apply
    at run time (not in ``Component.live_fields``) are logged once as needing a restart. An
    invalid update is logged (document and field named) and ignored: the last good value stays.
    If etcd is unreachable at start, the local directory or the defaults are used (``source``
    says which) and the etcd values take over, with the hooks called, as soon as etcd answers.
    Without a hub (no config center) the value is static.
    """

    def __init__(
        self,
        resolver: Resolver[M],
        *,
        client: EtcdClient | None = None,
        hub: ConfigHub | None = None,
        unreachable: str = "",
        on_close: Callable[[LiveConfig[M]], None] | None = None,
    ) -> None:
        self._resolver = resolver
        self.component = resolver.spec.name
        self.service = resolver.service
        self._client = client
        self._raw: dict[str, bytes | None] = dict.fromkeys(resolver.keys)
        self._mod: dict[str, int] = dict.fromkeys(resolver.keys, 0)
        self._hooks: list[Callable[[M, M], None]] = []
        self._lock = threading.RLock()
        self._revision: int | None = None
        self._sub: Subscription | None = None
        self._on_close = on_close
        self._source: Source
        if client is None or hub is None:
            self._value = self._degraded(unreachable)
            return
        # subscribe first (its start revision is fixed now), then read: nothing is missed
        self._sub = hub.subscribe(resolver.keys, self._on_events, self._resync)
        try:
            self._read()
            self._value = resolver.build(resolver.etcd_layers(self._raw))
            self._source = "etcd"
        except CoordUnavailable as exc:
            self._value = self._degraded(f"etcd unreachable ({exc})")
        except BaseException:
            self._sub.cancel()
            raise

    def _degraded(self, why: str) -> M:
        local = self._resolver.local_layers()
        value = self._resolver.build(local)
        self._source = "local" if local else "defaults"
        where = (
            f"local directory {os.environ.get(CONFIG_DIR_VAR)}"
            if local
            else "built-in defaults, the environment and keyword arguments"
        )
        if why:
            log_once(
                "warning",
                f"{why}; {self.component} config from the {where} until etcd answers",
                "unreachable",
                self.component,
                self.service,
                component=self.component,
                service_name=self.service,
                source=where,
            )
        else:
            log_once(
                "info",
                f"no config center configured; {self.component} config from the {where}",
                "no-center",
                self.component,
                self.service,
                component=self.component,
                service_name=self.service,
                source=where,
            )
        return value

    @property
    def value(self) -> M:
        """The current validated config."""
        return self._value

    def get(self) -> M:
        """Same as :attr:`value`."""
        return self._value

    @property
    def source(self) -> Source:
        """Where the current value came from: "etcd", "local" files or "defaults"."""
        return self._source

    @property
    def revision(self) -> int | None:
        """The etcd revision the value was last read or updated at (None while degraded)."""
        return self._revision

    def on_change(self, hook: Callable[[M, M], None]) -> None:
        """Call ``hook(old, new)`` on every applied change (from the watch thread)."""
        with self._lock:
            self._hooks.append(hook)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the shared watch stream is established (False without a config center)."""
        loop = self._sub.hub.loop if self._sub is not None else None
        return loop is not None and loop.connected.wait(timeout)

    def _read(self) -> None:
        assert self._client is not None
        keys = self._resolver.keys
        result = self._client.txn([], [GetOp(k) for k in keys])
        for key, resp in zip(keys, result.responses, strict=True):
            kvs: list[KeyValue] = resp if isinstance(resp, list) else []
            self._raw[key] = kvs[0].value if kvs else None
            self._mod[key] = kvs[0].mod_revision if kvs else result.revision
        self._revision = result.revision

    def _resync(self) -> None:
        with self._lock:
            self._read()
            self._apply(took_over=self._source != "etcd")

    def _on_events(self, events: list[WatchEvent]) -> None:
        with self._lock:
            touched = False
            for ev in events:
                key = ev.kv.key
                if key in self._raw and ev.kv.mod_revision > self._mod[key]:
                    self._raw[key] = ev.kv.value if ev.kind == "put" else None
                    self._mod[key] = ev.kv.mod_revision
                    self._revision = ev.kv.mod_revision
                    touched = True
            if touched:
                self._apply(took_over=False)

    def _apply(self, *, took_over: bool) -> None:
        try:
            new = self._resolver.build(self._resolver.etcd_layers(self._raw))
        except ConfigError as exc:
            _log.error(
                "rejected an invalid config update; keeping the last good config",
                component=self.component,
                service_name=self.service,
                cause=str(exc),
            )
            _metrics.config_reloaded(self.component, "rejected")
            return
        if took_over:
            _log.info("etcd answers; its config takes over", component=self.component)
            self._source = "etcd"
        old = self._value
        if new == old:
            return
        self._value = new
        _metrics.config_reloaded(self.component, "applied")
        spec = self._resolver.spec
        restart = [p for p in _changed_paths(old, new) if not spec.is_live(p)]
        if restart:
            log_once(
                "warning",
                f"{self.component} config changed in fields applied only at start; "
                "restart to use them",
                "restart",
                self.component,
                self.service,
                *restart,
                component=self.component,
                service_name=self.service,
                fields=restart,
            )
        for hook in list(self._hooks):
            try:
                hook(old, new)
            except Exception:
                _log.exception("config on_change hook failed", component=self.component)

    def close_with(self, owner: object) -> None:
        """Stop following changes when ``owner`` (the client built from this config) is closed,
        or garbage collected unclosed, if :meth:`close` was not called before
        (:func:`im_infra.clog.lifecycle.on_close`): its on-change hooks never see a closed
        client. ``owner`` is a ``Closing`` or ``AsyncClosing`` (TypeError otherwise)."""
        on_close(owner, self.close)

    def close(self) -> None:
        """Stop following changes (idempotent)."""
        if self._sub is not None:
            self._sub.cancel()
        if self._on_close is not None:
            self._on_close(self)
