"""What fakeredis's Lua lacks and Redis has: the ``struct`` library (its ``unpack`` of unsigned
integers, what the cache's scripts use). Installed into a fakeredis server's Lua runtime."""

from __future__ import annotations

from typing import Any

STRUCT_LUA = """
struct = {}
function struct.unpack(fmt, s, pos)
  pos = pos or 1
  local big = true
  local out = {}
  local i = 1
  while i <= #fmt do
    local c = string.sub(fmt, i, i)
    if c == '>' or c == '!' then big = true; i = i + 1
    elseif c == '<' then big = false; i = i + 1
    elseif c == 'I' or c == 'i' then
      local digits = string.match(fmt, '^%d+', i + 1) or '4'
      local n = tonumber(digits)
      i = i + 1 + (string.match(fmt, '^%d+', i + 1) and #digits or 0)
      local v = 0
      for j = 0, n - 1 do
        local b = string.byte(s, big and (pos + j) or (pos + n - 1 - j))
        if b == nil then error('struct.unpack: data string too short') end
        v = v * 256 + b
      end
      out[#out + 1] = v
      pos = pos + n
    else
      error('struct.unpack: option ' .. c .. ' is not supported here')
    end
  end
  out[#out + 1] = pos
  return unpack(out)
end
"""


def install_struct(client: Any, server: Any) -> bool:
    """Give ``server``'s Lua runtime the ``struct`` global; False when this fakeredis version
    keeps its runtime elsewhere (scripts using ``struct`` then fail with a clear Lua error)."""
    client.eval("return 1", 0)  # fakeredis creates the server's Lua runtime on the first EVAL
    runtime = getattr(server, "_lua_runtime", None)
    expected = getattr(server, "_lua_expected_globals", None)
    if runtime is None or not isinstance(expected, set):
        return False
    runtime.execute(STRUCT_LUA)
    expected.update(k for k in runtime.globals() if k in (b"struct", "struct"))
    return True
