"""Lua scripts registered once and run by SHA."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from im_infra.cache._internal.flow import sha1

if TYPE_CHECKING:
    from im_infra.cache._internal.ops import Ops

__all__ = ["Script"]


class Script:
    """A Lua script: its source and SHA1, and the cache it was registered on.

    Calling it runs ``EVALSHA`` with the keys prefixed by the cache's key prefix (``KEYS`` inside
    the script are the full, prefixed names; the caller passes and sees unprefixed names only).
    When the server answers NOSCRIPT (after ``SCRIPT FLUSH``, a restart or a failover) the script
    is loaded again with ``SCRIPT LOAD`` and the call retried, transparently. In a pipeline the
    script is loaded (if missing) before the pipeline is sent. Bulk-string replies are decoded to
    ``str`` where they are valid UTF-8, recursively through arrays.

    On a blocking cache ``script(...)`` returns the reply; on an asyncio cache it returns an
    awaitable; with ``client=pipeline`` it queues the call on that pipeline.
    """

    __slots__ = ("_owner", "lua", "sha")

    def __init__(self, lua: str, owner: Ops | None = None) -> None:
        self.lua = lua
        self.sha = sha1(lua)
        self._owner = owner

    def __call__(
        self, keys: Iterable[str] = (), args: Iterable[Any] = (), *, client: Ops | None = None
    ) -> Any:
        """Run the script on ``client`` (default: the cache that registered it)."""
        target = client if client is not None else self._owner
        if target is None:
            raise TypeError("script is not registered on a cache: pass client=")
        return target.run_script(self, keys, args)

    def __repr__(self) -> str:
        return f"Script(sha={self.sha!r})"
