"""Process-wide logging state shared by the logger, the stdlib bridge and :func:`init`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from im_infra.clog._internal.sink import Sink

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


@dataclass
class State:
    configured: bool = False
    min_level: int = 20
    service: str = ""
    handler_id: int | None = None
    #: Set unless ``loguru_passthrough``: clog's loggers then write straight to this sink.
    direct: Sink | None = None


STATE = State()


def level_name(levelno: int) -> str:
    """The clog level name for a stdlib level number (custom levels round down)."""
    name = "DEBUG"
    for candidate, no in LEVELS.items():
        if levelno >= no:
            name = candidate
    return name
