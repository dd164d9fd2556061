"""im_infra.cache: Redis access with a uniform interface (sync and asyncio), on redis-py."""

__all__: list[str] = []
