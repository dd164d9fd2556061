"""Table sharding: a key → one of N tables ``<base>_00`` … ``<base>_NN``.

The shard of a key is the same in every process and every language that follows the rule:

* ``int`` keys (user IDs, conversation IDs): ``key mod shards`` (Python's modulo, so a negative
  key still maps into ``0 … shards-1``) — the Go original's ``id % n`` for non-negative IDs;
* ``str`` / ``bytes`` keys: CRC-32 (IEEE, as Go's ``hash/crc32.ChecksumIEEE``) of the UTF-8
  bytes, ``mod shards``.

Python's built-in ``hash()`` is salted per process and is never used. The suffix has two digits
(``_00`` … ``_99``), more when ``shards > 100`` (``_000`` …).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from sqlalchemy import MetaData, Table

__all__ = ["ShardKey", "ShardedTable", "shard_index", "shard_suffix", "shard_table_name"]

ShardKey = int | str | bytes


def _check_shards(shards: int) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive int, got {shards!r}")


def shard_index(key: ShardKey, shards: int) -> int:
    """The shard number (0 … shards-1) of ``key``."""
    _check_shards(shards)
    if isinstance(key, bool):
        raise TypeError("a shard key must be int, str or bytes, not bool")
    if isinstance(key, int):
        return key % shards
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8")) % shards
    if isinstance(key, bytes | bytearray | memoryview):
        return zlib.crc32(key) % shards
    raise TypeError(f"a shard key must be int, str or bytes, not {type(key).__name__}")


def _width(shards: int) -> int:
    return max(2, len(str(shards - 1)))


def shard_suffix(key: ShardKey, shards: int) -> str:
    """``"_07"``: the table-name suffix of ``key``'s shard."""
    return f"_{shard_index(key, shards):0{_width(shards)}d}"


def shard_table_name(base: str, key: ShardKey, shards: int) -> str:
    """``"messages_07"``: the name of the table holding ``key``."""
    return base + shard_suffix(key, shards)


class ShardedTable:
    """N copies of a template :class:`~sqlalchemy.Table`, one per shard, for Core queries.

    ``template`` describes the columns; it need not exist in the database itself::

        messages = Table("messages", template_md, Column("id", BigInteger, primary_key=True), ...)
        sharded = ShardedTable(messages, 16, metadata=MetaData())
        provider.create_all(sharded.metadata)           # messages_00 … messages_15
        session.execute(insert(sharded.for_key(conv_id)).values(...))
    """

    def __init__(self, template: Table, shards: int, *, metadata: MetaData | None = None) -> None:
        _check_shards(shards)
        self.template = template
        self.shards = shards
        self.metadata = metadata if metadata is not None else MetaData()
        self._tables: list[Table] = [
            template.to_metadata(self.metadata, name=self.name(index)) for index in range(shards)
        ]

    def name(self, index: int) -> str:
        """The name of shard ``index``."""
        if not 0 <= index < self.shards:
            raise IndexError(f"shard index {index} out of range 0..{self.shards - 1}")
        return f"{self.template.name}_{index:0{_width(self.shards)}d}"

    def index_for(self, key: ShardKey) -> int:
        """The shard number of ``key``."""
        return shard_index(key, self.shards)

    def name_for(self, key: ShardKey) -> str:
        """The table name for ``key``."""
        return self._tables[shard_index(key, self.shards)].name

    def for_key(self, key: ShardKey) -> Table:
        """The Table object for ``key``."""
        return self._tables[shard_index(key, self.shards)]

    def __getitem__(self, index: int) -> Table:
        return self._tables[index]

    def __iter__(self) -> Iterator[Table]:
        return iter(self._tables)

    def __len__(self) -> int:
        return self.shards
