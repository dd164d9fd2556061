"""im_infra.uid: Snowflake 64-bit IDs with the worker ID allocated by coord, and UUID v7."""

__all__: list[str] = []
