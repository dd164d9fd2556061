"""im_infra.coord: service registry, config center, distributed locks and instance IDs on etcd.

::

    from im_infra import coord

    with coord.connect("127.0.0.1:2379", service="im-logic") as p:
        worker_id = p.instance.get_instance_id()
        p.registry.register(coord.ServiceInstance("im-logic", "node-1", "10.0.0.5:9000"))
        with p.lock.acquire("daily-report", ttl=10, timeout=5):
            ...
        cfg = coord.load_component_config("kafka", KafkaConfig, service="im-logic", provider=p)
"""

from im_infra.coord.component_config import (
    CONFIG_DIR_VAR,
    ENV_VAR,
    LiveConfig,
    load_component_config,
    resolve_env,
)
from im_infra.coord.config import ConfigEntry, ConfigEvent, ConfigWatch, EtcdConfigManager
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
from im_infra.coord.instance import EtcdInstancer
from im_infra.coord.lock import DistributedLock, EtcdLocker
from im_infra.coord.protocols import ConfigManager, Instancer, Locker, Provider, ServiceRegistry
from im_infra.coord.provider import EtcdProvider, connect
from im_infra.coord.registry import EtcdRegistry, ServiceInstance, WatchHandle

__all__ = [
    "CONFIG_DIR_VAR",
    "ENV_VAR",
    "AuthenticationError",
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
    "connect",
    "load_component_config",
    "parse_duration",
    "resolve_env",
]
