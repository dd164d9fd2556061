"""Exceptions raised by clog."""

from __future__ import annotations

__all__ = ["ClogError", "ConfigError"]


class ClogError(Exception):
    """Base class of every clog error."""


class ConfigError(ClogError, ValueError):
    """Bad logging configuration (unknown level or format, bad sink). Also a ValueError."""
