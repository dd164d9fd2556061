"""``connect()`` and the etcd-backed Provider, the entry point of coord."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from im_infra.clog.lifecycle import Closing
from im_infra.coord._internal.documents import resolve_env
from im_infra.coord._internal.etcd import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    EtcdClient,
    TlsFiles,
)
from im_infra.coord._internal.lease import LeaseKeeper
from im_infra.coord._internal.log import log
from im_infra.coord.config import EtcdConfigManager
from im_infra.coord.errors import ConfigError, CoordError, CoordUnavailable
from im_infra.coord.instance import DEFAULT_INSTANCE_TTL, DEFAULT_MAX_ID, EtcdInstancer
from im_infra.coord.lock import EtcdLocker
from im_infra.coord.registry import EtcdRegistry

ENDPOINTS_VAR = "IM_INFRA_ETCD_ENDPOINTS"
USERNAME_VAR = "IM_INFRA_ETCD_USERNAME"
PASSWORD_VAR = "IM_INFRA_ETCD_PASSWORD"  # noqa: S105 (a variable name, not a password)
CA_CERT_VAR = "IM_INFRA_ETCD_CA_CERT"
CERT_VAR = "IM_INFRA_ETCD_CERT"
KEY_VAR = "IM_INFRA_ETCD_KEY"
SERVICE_VAR = "IM_INFRA_SERVICE"

_log = log.named("provider")


def _endpoint_list(endpoints: str | Sequence[str] | None) -> list[str]:
    if endpoints is None:
        endpoints = os.environ.get(ENDPOINTS_VAR, "")
        if not endpoints.strip():
            raise ConfigError(
                f"no etcd endpoints: pass endpoints= or set {ENDPOINTS_VAR} (comma separated)"
            )
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    found = [e.strip() for e in endpoints if e.strip()]
    if not found:
        raise ConfigError("the etcd endpoint list is empty")
    return found


class EtcdProvider(Closing):
    """The etcd-backed :class:`~im_infra.coord.Provider`: registry, config, lock, instance IDs.

    Create it with :func:`connect`. The pieces are created on first use and share one client
    (with failover between the endpoints) and one lease keepalive thread. ``close()`` releases
    instance IDs, deregisters services, stops watches and closes the connections.
    """

    def __init__(
        self, client: EtcdClient, *, service: str | None, env: str, max_id: int = DEFAULT_MAX_ID
    ) -> None:
        self.client = client
        self.service = service
        self.env = env
        self._max_id = max_id
        self.keeper = LeaseKeeper(client)
        self._lock = threading.Lock()
        self._registry: EtcdRegistry | None = None
        self._config: EtcdConfigManager | None = None
        self._locker: EtcdLocker | None = None
        self._instancers: dict[tuple[str, int, int, bool], EtcdInstancer] = {}
        self._owned_instancers: list[EtcdInstancer] = []
        self._closed = False

    @property
    def endpoints(self) -> list[str]:
        return list(self.client.endpoints)

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this coord provider is closed")

    @property
    def registry(self) -> EtcdRegistry:
        """Service registration and discovery."""
        with self._lock:
            self._check_open()
            if self._registry is None:
                self._registry = EtcdRegistry(self.client, self.keeper)
            return self._registry

    @property
    def config(self) -> EtcdConfigManager:
        """The config center for this provider's environment."""
        with self._lock:
            self._check_open()
            if self._config is None:
                self._config = EtcdConfigManager(self.client, self.env, self.service)
            return self._config

    @property
    def lock(self) -> EtcdLocker:
        """Distributed locks."""
        with self._lock:
            self._check_open()
            if self._locker is None:
                self._locker = EtcdLocker(self.client, self.keeper)
            return self._locker

    @property
    def instance(self) -> EtcdInstancer:
        """The instance-ID allocator of this provider's service (``connect(service=...)``)."""
        if not self.service:
            raise ConfigError(
                f"provider.instance needs a service name: connect(service=...) or {SERVICE_VAR}"
            )
        return self.instance_for(self.service, max_id=self._max_id)

    def instance_for(
        self,
        service: str,
        *,
        max_id: int = DEFAULT_MAX_ID,
        ttl: int = DEFAULT_INSTANCE_TTL,
        sticky: bool = False,
    ) -> EtcdInstancer:
        """The instance-ID allocator for ``service`` with IDs in [0, max_id], its lease living
        ``ttl`` seconds without keepalive (one allocator per distinct argument set). ``sticky``:
        a process restarted on the same host gets its predecessor's ID back (see
        :mod:`im_infra.coord.instance`); for identities such as Kafka static membership, not
        for Snowflake worker IDs."""
        with self._lock:
            self._check_open()
            key = (service, max_id, ttl, sticky)
            inst = self._instancers.get(key)
            if inst is None:
                inst = self._instancers[key] = EtcdInstancer(
                    self.client, self.keeper, service, max_id=max_id, ttl=ttl, sticky=sticky
                )
            return inst

    def new_instancer(
        self,
        service: str,
        *,
        max_id: int = DEFAULT_MAX_ID,
        ttl: int = DEFAULT_INSTANCE_TTL,
        sticky: bool = False,
    ) -> EtcdInstancer:
        """A new instance-ID allocator for ``service``, not shared with other callers (unlike
        :meth:`instance_for`): for a component that needs one ID per object, such as one per
        Kafka consumer. Release it when done; :meth:`close` releases it too."""
        with self._lock:
            self._check_open()
            inst = EtcdInstancer(
                self.client, self.keeper, service, max_id=max_id, ttl=ttl, sticky=sticky
            )
            self._owned_instancers.append(inst)
            return inst

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Release everything this provider holds, now, and close the connections (idempotent).

        The order (graceful shutdown, see docs/coord.md): 1. deregister every service instance
        registered here (revoking its lease deletes the key at once), so no new traffic is
        routed to this process, and stop the discovery watches; 2. release the locks still
        held and revoke the lock sessions' leases; 3. give the instance IDs back (revoke their
        leases: a uid generator using one stops); 4. stop config watches and live configs;
        5. revoke every lease still kept alive by this provider; 6. stop the keepalive threads
        and close the connections. Nothing is left to expire after its TTL; when etcd is
        unreachable, each revocation gives up after at most 2 s and the keys then expire
        with their leases.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            instancers = [*self._instancers.values(), *self._owned_instancers]
            registry, config, locker = self._registry, self._config, self._locker
        try:
            if registry is not None:
                registry.close()
            if locker is not None:
                locker.close()
            for inst in instancers:
                inst.release()
            if config is not None:
                config.close()
            self.keeper.revoke_all()
        finally:
            self.keeper.close()
            self.client.close()
        _log.debug("closed", endpoints=self.client.endpoints, service_name=self.service)

    def __repr__(self) -> str:
        return f"EtcdProvider(endpoints={self.endpoints!r}, service={self.service!r})"


def connect(
    endpoints: str | Sequence[str] | None = None,
    *,
    service: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    cert_cert: str | None = None,
    cert_key: str | None = None,
    timeout: float = 5.0,
    env: str | None = None,
    attempt_timeout: float | None = None,
    keepalive_time: float = DEFAULT_KEEPALIVE_TIME,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
) -> EtcdProvider:
    """Connect to etcd and return a Provider.

    ``endpoints``: "host:port" strings (a list, or one comma-separated string; ``https://`` turns
    TLS on); default ``$IM_INFRA_ETCD_ENDPOINTS``. Credentials and TLS files default to
    ``$IM_INFRA_ETCD_USERNAME``/``_PASSWORD`` and ``$IM_INFRA_ETCD_CA_CERT``/``_CERT``/``_KEY``;
    ``service`` to ``$IM_INFRA_SERVICE``; ``env`` to ``$IM_INFRA_ENV`` or "dev". ``timeout``
    bounds every etcd call (per endpoint tried); ``attempt_timeout`` (default 1 s, at most
    ``timeout``) bounds each attempt of a call, doubling at every attempt that runs out, so a
    call the killed leader never answers fails over to another member within about that time.
    ``keepalive_time``/``keepalive_timeout`` (6 s/4 s): gRPC pings on every connection with a
    call open, so a dead link that neither resets nor closes (a blackhole) is noticed within
    their sum, and a watch on it resumes elsewhere or once the link is back (keep
    ``keepalive_time`` >= etcd's ``--grpc-keepalive-min-time``, 5 s by default).

    Connecting is lazy: an unreachable etcd is not an error here (calls then raise
    :class:`CoordUnavailable`), so a service can start degraded. Wrong credentials are: with a
    username, the token is requested now and :class:`AuthenticationError` raised if refused.
    """
    user = username if username is not None else os.environ.get(USERNAME_VAR) or None
    secret = password if password is not None else os.environ.get(PASSWORD_VAR) or None
    tls = TlsFiles(
        ca_cert=ca_cert or os.environ.get(CA_CERT_VAR) or None,
        cert_cert=cert_cert or os.environ.get(CERT_VAR) or None,
        cert_key=cert_key or os.environ.get(KEY_VAR) or None,
    )
    client = EtcdClient(
        _endpoint_list(endpoints),
        username=user,
        password=secret,
        tls=tls,
        timeout=timeout,
        attempt_timeout=attempt_timeout,
        keepalive_time=keepalive_time,
        keepalive_timeout=keepalive_timeout,
    )
    if user is not None:
        try:
            client.authenticate()
        except CoordUnavailable as exc:
            _log.warning(
                "etcd unreachable at connect; will authenticate on first use",
                endpoints=client.endpoints,
                cause=str(exc),
            )
        except CoordError:
            client.close()
            raise
    provider = EtcdProvider(
        client, service=service or os.environ.get(SERVICE_VAR) or None, env=resolve_env(env)
    )
    _log.debug("connected", endpoints=client.endpoints, service_name=provider.service)
    return provider
