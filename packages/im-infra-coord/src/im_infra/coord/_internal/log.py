"""The package's loggers (clog, namespace "coord")."""

from __future__ import annotations

from im_infra import clog

log = clog.get_logger("coord")
