"""Bloom filters: RedisBloom's BF.* commands when the server has the module, otherwise a pure-Redis
implementation (one string key: a 12-byte header + bitmap, updated atomically by Lua).

Fallback format (documented in docs/cache.md so other languages can share filters):
the key holds ``b"IMBF" + m.to_bytes(4, "big") + k.to_bytes(4, "big")`` followed by an ``m``-bit
bitmap (bit ``i`` of the filter is Redis bit offset ``96 + i``). An item's bytes are hashed with
BLAKE2b (8-byte digest); ``h1`` is the first 4 bytes, ``h2`` the last 4 bytes with the low bit set
(big endian); its ``k`` bits are ``(h1 + j*h2) mod m`` for ``j`` in ``0..k-1``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex

from im_infra.cache._internal.flow import Cmd, Flow, script_flow, sha1
from im_infra.cache.errors import CacheError

DEFAULT_CAPACITY = 100  # RedisBloom's defaults for BF.ADD on a missing key
DEFAULT_ERROR_RATE = 0.01
_MAX_BITS = 2**32 - 1 - 96

RESERVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR item exists')
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

_HEADER_LUA = """
local hdr = redis.call('GETRANGE', KEYS[1], 0, 11)
if hdr == '' then
  if create == 0 then return nil end
  redis.call('SET', KEYS[1], ARGV[1])
  hdr = ARGV[1]
end
if #hdr < 12 or string.sub(hdr, 1, 4) ~= 'IMBF' then
  return redis.error_reply('WRONGTYPE key does not hold an im-infra bloom filter')
end
local m = struct.unpack('>I4', hdr, 5)
local k = struct.unpack('>I4', hdr, 9)
"""

ADD_LUA = (
    "local function header(create)"
    + _HEADER_LUA
    + """
return {m, k}
end
local mk = header(1)
if mk.err then return mk end
local m, k = mk[1], mk[2]
local out = {}
for i = 2, #ARGV, 2 do
  local h1, h2 = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local added = 0
  for j = 0, k - 1 do
    if redis.call('SETBIT', KEYS[1], 96 + math.fmod(h1 + j * h2, m), 1) == 0 then added = 1 end
  end
  out[#out + 1] = added
end
return out
"""
)

EXISTS_LUA = (
    "local function header(create)"
    + _HEADER_LUA
    + """
return {m, k}
end
local mk = header(0)
local out = {}
if mk == nil then
  for i = 1, #ARGV, 2 do out[#out + 1] = 0 end
  return out
end
if mk.err then return mk end
local m, k = mk[1], mk[2]
for i = 1, #ARGV, 2 do
  local h1, h2 = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local found = 1
  for j = 0, k - 1 do
    if redis.call('GETBIT', KEYS[1], 96 + math.fmod(h1 + j * h2, m)) == 0 then
      found = 0
      break
    end
  end
  out[#out + 1] = found
end
return out
"""
)

RESERVE_SHA, ADD_SHA, EXISTS_SHA = sha1(RESERVE_LUA), sha1(ADD_LUA), sha1(EXISTS_LUA)


def parameters(error_rate: float, capacity: int) -> tuple[int, int]:
    """(m bits, k hash functions) for ``capacity`` items at ``error_rate`` false positives."""
    if not 0 < error_rate < 1:
        raise CacheError(f"bloom error_rate must be in (0, 1), got {error_rate!r}")
    if capacity < 1:
        raise CacheError(f"bloom capacity must be >= 1, got {capacity!r}")
    bits = math.ceil(-capacity * math.log(error_rate) / (math.log(2) ** 2))
    if bits > _MAX_BITS:
        raise CacheError(f"bloom filter too large: {bits} bits (the fallback holds {_MAX_BITS})")
    hashes = max(1, round(bits / capacity * math.log(2)))
    return bits, hashes


def header(error_rate: float, capacity: int) -> bytes:
    """The fallback key's 12-byte header."""
    bits, hashes = parameters(error_rate, capacity)
    return b"IMBF" + struct.pack(">II", bits, hashes)


DEFAULT_HEADER = header(DEFAULT_ERROR_RATE, DEFAULT_CAPACITY)


def hash_args(items: Sequence[bytes]) -> list[int]:
    """[h1, h2, h1, h2, ...] for ``items`` (see the module docstring)."""
    out: list[int] = []
    for item in items:
        digest = hashlib.blake2b(item, digest_size=8).digest()
        out.append(int.from_bytes(digest[:4], "big"))
        out.append(int.from_bytes(digest[4:], "big") | 1)
    return out


class BloomState:
    """Which backend a cache uses: ``module``, ``lua``, or ``auto`` until the first call tells."""

    __slots__ = ("mode",)

    def __init__(self, mode: str) -> None:
        self.mode = mode


def _unknown_command(exc: rex.RedisError) -> bool:
    # the server's answer, or redis-py's cluster client refusing to route an unknown command
    text = str(exc).lower()
    return "unknown command" in text or "doesn't exist in redis commands" in text


def _module_flow(state: BloomState, command: tuple[Any, ...]) -> Flow[tuple[bool, Any]]:
    """Try a BF.* command; (False, None) when the server turned out to lack the module."""
    if state.mode == "lua":
        return False, None
    try:
        reply = yield Cmd(command)
    except rex.RedisError as exc:
        if state.mode == "module" or not _unknown_command(exc):
            raise
        state.mode = "lua"
        return False, None
    state.mode = "module"
    return True, reply


def reserve_flow(state: BloomState, key: str, error_rate: float, capacity: int) -> Flow[None]:
    """BF.RESERVE (fails if the key exists)."""
    hdr = header(error_rate, capacity)
    done, _ = yield from _module_flow(state, ("BF.RESERVE", key, error_rate, capacity))
    if not done:
        yield from script_flow(RESERVE_LUA, RESERVE_SHA, [key], [hdr])


def add_flow(state: BloomState, key: str, items: Sequence[bytes]) -> Flow[list[bool]]:
    """BF.MADD: for each item, True when it was (probably) not in the filter before."""
    done, reply = yield from _module_flow(state, ("BF.MADD", key, *items))
    if not done:
        reply = yield from script_flow(ADD_LUA, ADD_SHA, [key], [DEFAULT_HEADER, *hash_args(items)])
    return [bool(x) for x in reply]


def exists_flow(state: BloomState, key: str, items: Sequence[bytes]) -> Flow[list[bool]]:
    """BF.MEXISTS: for each item, True when it is probably in the filter (False: surely not)."""
    done, reply = yield from _module_flow(state, ("BF.MEXISTS", key, *items))
    if not done:
        reply = yield from script_flow(EXISTS_LUA, EXISTS_SHA, [key], hash_args(items))
    return [bool(x) for x in reply]
