"""im_infra.coord: service registry, config center, distributed locks and instance IDs on etcd.

::

    from im_infra import coord

    with coord.connect("127.0.0.1:2379", service="im-logic") as p:
        worker_id = p.instance.instance_id()
        p.registry.register(coord.ServiceInstance("im-logic", "node-1", "10.0.0.5:9000"))
        with p.lock.acquire("daily-report", ttl=10, timeout=5):
            ...
        cfg = coord.load_component_config("kafka", KafkaConfig, service="im-logic", coord=p)

Components (mq, cache, db, uid) need no provider argument: with ``$IM_INFRA_ETCD_ENDPOINTS`` set
they share :func:`default_provider`. Sources and precedence: docs/configuration.md.
"""

from im_infra.coord._internal.documents import CONFIG_DIR_VAR, ENV_VAR, resolve_env
from im_infra.coord._internal.redact import redact as redact_secrets
from im_infra.coord.component import ENTRY_POINT_GROUP, Component, discover_components
from im_infra.coord.component_config import LiveConfig
from im_infra.coord.config import ConfigWatch, EtcdConfigManager
from im_infra.coord.default_provider import close_default_provider, default_provider
from im_infra.coord.deprecation import deprecated_names, warn_renamed
from im_infra.coord.duration import Duration, parse_duration
from im_infra.coord.errors import (
    AuthenticationError,
    ConfigError,
    CoordError,
    CoordUnavailable,
    InstanceIdExhausted,
    LockLost,
    LockTimeout,
    NoInstanceAvailable,
    TLSError,
)
from im_infra.coord.instance import EtcdInstancer, InstanceLease
from im_infra.coord.loading import live_config, load_component_config, pick_provider
from im_infra.coord.lock import DistributedLock, EtcdLocker
from im_infra.coord.protocols import ConfigManager, Instancer, Locker, Provider, ServiceRegistry
from im_infra.coord.provider import EtcdProvider, connect
from im_infra.coord.registry import EtcdRegistry, WatchHandle
from im_infra.coord.types import ConfigEntry, ConfigEvent, ServiceInstance

__all__ = [
    "CONFIG_DIR_VAR",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "AuthenticationError",
    "Component",
    "ConfigEntry",
    "ConfigError",
    "ConfigEvent",
    "ConfigManager",
    "ConfigWatch",
    "CoordError",
    "CoordUnavailable",
    "DistributedLock",
    "Duration",
    "EtcdConfigManager",
    "EtcdInstancer",
    "EtcdLocker",
    "EtcdProvider",
    "EtcdRegistry",
    "InstanceIdExhausted",
    "InstanceLease",
    "Instancer",
    "LiveConfig",
    "LockLost",
    "LockTimeout",
    "Locker",
    "NoInstanceAvailable",
    "Provider",
    "ServiceInstance",
    "ServiceRegistry",
    "TLSError",
    "WatchHandle",
    "close_default_provider",
    "connect",
    "default_provider",
    "deprecated_names",
    "discover_components",
    "live_config",
    "load_component_config",
    "parse_duration",
    "pick_provider",
    "redact_secrets",
    "resolve_env",
    "warn_renamed",
]
