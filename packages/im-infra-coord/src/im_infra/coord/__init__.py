"""im_infra.coord: Service registry/discovery, config center with live watch and graceful fallback, distributed locks and instance IDs, on etcd v3."""

__all__: list[str] = []
