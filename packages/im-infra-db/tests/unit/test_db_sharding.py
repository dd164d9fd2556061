"""Table sharding: stable, Go-compatible key → suffix mapping."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections import Counter

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table

from im_infra.db import sharding
from im_infra.db.sharding import ShardedTable, shard_index, shard_suffix, shard_table_name


def test_int_keys_use_modulo() -> None:
    assert shard_index(0, 16) == 0
    assert shard_index(17, 16) == 1
    assert shard_index(10_000_000_019, 100) == 19
    assert shard_index(-1, 16) == 15


def test_string_keys_use_crc32_ieee() -> None:
    # crc32("hello") = 0x3610A686 = 907060870 (Go: crc32.ChecksumIEEE([]byte("hello")))
    assert zlib.crc32(b"hello") == 907060870
    assert shard_index("hello", 16) == 907060870 % 16
    assert shard_index(b"hello", 16) == shard_index("hello", 16)
    assert shard_index("会话-42", 8) == zlib.crc32("会话-42".encode()) % 8


def test_suffix_and_names() -> None:
    assert shard_suffix(7, 16) == "_07"
    assert shard_suffix(99, 100) == "_99"
    assert shard_suffix(5, 1000) == "_005"
    assert shard_suffix(0, 1) == "_00"
    assert shard_table_name("messages", 33, 32) == "messages_01"


@pytest.mark.parametrize("shards", [0, -3, True, 2.5])
def test_bad_shard_counts(shards: object) -> None:
    with pytest.raises(ValueError, match="shards"):
        shard_index(1, shards)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [1.5, None, True, ["a"]])
def test_bad_keys(key: object) -> None:
    with pytest.raises(TypeError):
        shard_index(key, 4)  # type: ignore[arg-type]


def test_stable_across_processes_with_different_hash_seeds() -> None:
    keys = ["alice", "bob", "conv:991", "会话"]
    # Load only the sharding module (not the whole package) to keep the subprocesses cheap.
    code = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('sharding', {sharding.__file__!r});"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod);"
        f"print([mod.shard_index(k, 64) for k in {keys!r}])"
    )
    outputs = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(result.stdout.strip())
    assert outputs == {str([shard_index(k, 64) for k in keys])}


def test_string_keys_spread_over_all_shards() -> None:
    counts = Counter(shard_index(f"user-{i}", 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert min(counts.values()) > 800  # 1000 expected per shard


def test_sharded_table_copies_the_template() -> None:
    template = Table(
        "messages",
        MetaData(),
        Column("id", BigInteger, primary_key=True),
        Column("body", String(100)),
    )
    sharded = ShardedTable(template, 4)
    assert [t.name for t in sharded] == ["messages_00", "messages_01", "messages_02", "messages_03"]
    assert len(sharded) == 4
    assert set(sharded.metadata.tables) == {t.name for t in sharded}
    table = sharded.for_key(6)
    assert table.name == "messages_02" == sharded.name_for(6)
    assert sharded.index_for("hello") == shard_index("hello", 4)
    assert [c.name for c in table.columns] == ["id", "body"]
    assert sharded[3].name == "messages_03"
    with pytest.raises(IndexError):
        sharded.name(4)
