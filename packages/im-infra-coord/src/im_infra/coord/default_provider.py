"""The process-wide default provider: what a factory uses when it is handed none.

With ``$IM_INFRA_ETCD_ENDPOINTS`` set, :func:`default_provider` connects once (lazily, on the
first call: connecting opens no connection before the first etcd call) and every later call
returns the same provider; it is closed at interpreter exit (or by
:func:`close_default_provider`). Without the variable there is no config center: it returns None
and components use ``$IM_INFRA_CONFIG_DIR`` or their defaults.
"""

from __future__ import annotations

import atexit
import os
import threading

from im_infra.coord.provider import ENDPOINTS_VAR, EtcdProvider, connect

__all__ = ["close_default_provider", "default_provider"]

_lock = threading.Lock()
_provider: EtcdProvider | None = None
_at_exit = False


def default_provider() -> EtcdProvider | None:
    """The shared provider for ``$IM_INFRA_ETCD_ENDPOINTS``, or None when it is not set."""
    global _provider, _at_exit
    if not os.environ.get(ENDPOINTS_VAR, "").strip():
        return None
    with _lock:
        if _provider is None or _provider.closed:
            _provider = connect()
            if not _at_exit:
                atexit.register(close_default_provider)
                _at_exit = True
        return _provider


def close_default_provider() -> None:
    """Close the default provider (idempotent; the next :func:`default_provider` reconnects)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.close()
