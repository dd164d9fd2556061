"""Typed component configuration: resolution, validation, local fallback and live updates.

Resolution for component C of service S in environment E (later wins, deep-merged):

1. the pydantic model's defaults (the seed's values),
2. ``/im-infra/config/{E}/global/{C}.yaml`` in etcd,
3. ``/im-infra/config/{E}/{S}/{C}.yaml`` in etcd,
4. explicit overrides from code.

Without a provider, or when etcd is unreachable, the directory ``$IM_INFRA_CONFIG_DIR`` replaces
2-3 (``global/{C}.yaml``, else ``{C}.yaml``; then ``{S}/{C}.yaml``), with a warning when etcd was
expected; without that directory only defaults and overrides apply.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from im_infra.clog.lifecycle import Closing
from im_infra.coord._internal import metrics as _metrics
from im_infra.coord._internal.documents import Layer, parse_document, validate_layers
from im_infra.coord._internal.etcd import EtcdClient, GetOp, KeyValue, WatchEvent
from im_infra.coord._internal.log import log
from im_infra.coord._internal.watch import WatchLoop
from im_infra.coord.config import config_root
from im_infra.coord.errors import ConfigError, CoordUnavailable

if TYPE_CHECKING:
    from im_infra.coord.protocols import Provider

M = TypeVar("M", bound=BaseModel)

ENV_VAR = "IM_INFRA_ENV"
CONFIG_DIR_VAR = "IM_INFRA_CONFIG_DIR"
DEFAULT_ENV = "dev"

_log = log.named("config")

Source = Literal["etcd", "local", "defaults"]


def resolve_env(env: str | None = None) -> str:
    """``env``, else $IM_INFRA_ENV, else "dev"."""
    return env or os.environ.get(ENV_VAR) or DEFAULT_ENV


def _check_name(kind: str, value: str) -> None:
    if not value or "/" in value or value in (".", ".."):
        raise ConfigError(f"invalid {kind} name {value!r}: must be non-empty without '/'")


def document_keys(env: str, service: str, component: str) -> tuple[str, str]:
    """The etcd keys of the global and the service document, in that order."""
    _check_name("component", component)
    _check_name("service", service)
    root = config_root(env)
    return f"{root}global/{component}.yaml", f"{root}{service}/{component}.yaml"


def local_layers(component: str, service: str, config_dir: str | None = None) -> list[Layer]:
    """The documents found in the local config directory (``$IM_INFRA_CONFIG_DIR``)."""
    directory = config_dir if config_dir is not None else os.environ.get(CONFIG_DIR_VAR)
    if not directory:
        return []
    base = Path(directory)
    if not base.is_dir():
        raise ConfigError(f"{CONFIG_DIR_VAR}={directory} is not a directory")
    layers: list[Layer] = []
    global_candidates = [base / "global" / f"{component}.yaml", base / f"{component}.yaml"]
    for path in global_candidates:
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


def _override_layer(overrides: Mapping[str, Any] | None) -> list[Layer]:
    return [Layer("overrides", dict(overrides))] if overrides else []


def _etcd_layers(docs: list[tuple[str, bytes | None]]) -> list[Layer]:
    return [Layer(f"etcd {key}", parse_document(raw, key)) for key, raw in docs if raw is not None]


def load_component_config(
    component: str,
    model: type[M],
    *,
    service: str,
    provider: Provider | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: str | None = None,
) -> M:
    """Resolve, merge and validate ``component``'s config for ``service`` (one-shot read).

    Raises :class:`ConfigError` naming the document, the field and the problem when a document
    is malformed or a value is invalid. etcd being unreachable is not an error: the local
    directory (or the defaults) is used and a warning is logged.
    """
    if env is None and provider is not None:
        # the environment the provider was connected with (coord.connect(env=...))
        env = getattr(provider.config, "env", None)
    environment = resolve_env(env)
    global_key, service_key = document_keys(environment, service, component)
    layers: list[Layer]
    if provider is None:
        layers = local_layers(component, service)
    else:
        try:
            docs: list[tuple[str, bytes | None]] = []
            for key in (global_key, service_key):
                entry = provider.config.get(key)
                docs.append((key, None if entry is None else entry.value))
            layers = _etcd_layers(docs)
        except CoordUnavailable as exc:
            layers = local_layers(component, service)
            _log.warning(
                "etcd unreachable; using local config",
                component=component,
                service_name=service,
                config_dir=os.environ.get(CONFIG_DIR_VAR),
                cause=str(exc),
            )
    return validate_layers(model, layers + _override_layer(overrides), f"{component}")


class LiveConfig(Generic[M], Closing):
    """A component's validated config, kept current by a watch on etcd.

    ``value`` is always a valid model instance. When a document changes, the config is resolved
    again; if the result validates and differs, ``value`` is replaced and every ``on_change``
    hook is called with ``(old, new)`` on the watch thread. An invalid update is logged and
    ignored (the last good value stays). If etcd is unreachable at start, the local directory or
    the defaults are used (``source`` says which) and the etcd values take over, with the hooks
    called, as soon as etcd answers.
    """

    def __init__(
        self,
        client: EtcdClient,
        component: str,
        model: type[M],
        *,
        service: str,
        env: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.component = component
        self.service = service
        self._client = client
        self._model = model
        self._overrides = dict(overrides or {})
        self._keys = document_keys(env, service, component)
        self._raw: dict[str, bytes | None] = dict.fromkeys(self._keys)
        self._hooks: list[Callable[[M, M], None]] = []
        self._lock = threading.RLock()
        self._source: Source
        revision: int | None
        try:
            revision = self._read()
            self._value = self._compute()
            self._source = "etcd"
        except CoordUnavailable as exc:
            revision = None
            local = local_layers(component, service)
            self._value = validate_layers(model, local + _override_layer(overrides), component)
            self._source = "local" if local else "defaults"
            _log.warning(
                "etcd unreachable; using local config until it answers",
                component=component,
                service_name=service,
                source=self._source,
                cause=str(exc),
            )
        self._loop = WatchLoop(
            client,
            config_root(env),
            prefix=True,
            on_events=self._on_events,
            resync=self._resync,
            name=f"component:{service}/{component}",
            start_revision=revision,
        ).start()

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
        """The etcd revision the value reflects (None while degraded)."""
        return self._loop.revision

    def on_change(self, hook: Callable[[M, M], None]) -> None:
        """Call ``hook(old, new)`` on every applied change (from the watch thread)."""
        with self._lock:
            self._hooks.append(hook)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the watch stream is established."""
        return self._loop.connected.wait(timeout)

    def _read(self) -> int:
        result = self._client.txn([], [GetOp(k) for k in self._keys])
        for key, resp in zip(self._keys, result.responses, strict=True):
            kvs: list[KeyValue] = resp if isinstance(resp, list) else []
            self._raw[key] = kvs[0].value if kvs else None
        return result.revision

    def _compute(self) -> M:
        layers = _etcd_layers([(k, self._raw[k]) for k in self._keys])
        return validate_layers(
            self._model, layers + _override_layer(self._overrides), self.component
        )

    def _resync(self) -> int:
        with self._lock:
            revision = self._read()
            self._apply(took_over=self._source != "etcd")
            return revision

    def _on_events(self, events: list[WatchEvent]) -> None:
        with self._lock:
            touched = False
            for ev in events:
                if ev.kv.key in self._raw:
                    self._raw[ev.kv.key] = ev.kv.value if ev.kind == "put" else None
                    touched = True
            if touched:
                self._apply(took_over=False)

    def _apply(self, *, took_over: bool) -> None:
        try:
            new = self._compute()
        except ConfigError as exc:
            _log.error(
                "ignoring invalid config update; keeping the last good value",
                component=self.component,
                service_name=self.service,
                cause=str(exc),
            )
            _metrics.config_reloaded(self.component, "rejected")
            return
        if took_over:
            _log.info("etcd is back; live config takes over", component=self.component)
            self._source = "etcd"
        old = self._value
        if new == old:
            return
        self._value = new
        _metrics.config_reloaded(self.component, "applied")
        for hook in list(self._hooks):
            try:
                hook(old, new)
            except Exception:
                _log.exception("config on_change hook failed", component=self.component)

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self._loop.stop()
