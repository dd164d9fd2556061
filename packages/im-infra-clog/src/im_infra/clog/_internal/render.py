"""Turning a loguru record into one output line (JSON or console), with secrets redacted."""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

#: Key fragments whose values are never written (matched case-insensitively, anywhere in the key).
DEFAULT_REDACT = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "sasl",
    "credential",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "dsn",
)
REDACTED = "***"

#: Keys of the line itself; a caller's field with one of these names is written as ``_<name>``.
RESERVED = frozenset(
    {"time", "level", "service", "msg", "namespace", "trace_id", "span_id", "error"}
)

#: ``extra`` keys that clog itself puts on a loguru record.
NS_KEY = "clog_ns"
FIELDS_KEY = "clog_fields"
TRACE_KEY = "clog_trace_id"


class Redactor:
    """Decides, per key, whether a value is secret; caches decisions (keys repeat a lot)."""

    def __init__(self, fragments: Iterable[str]) -> None:
        frags = [f.lower() for f in fragments if f]
        self._re = re.compile("|".join(re.escape(f) for f in frags)) if frags else None
        self._cache: dict[str, bool] = {}

    def is_secret(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            hit = bool(self._re is not None and self._re.search(key.lower()))
            if len(self._cache) < 4096:
                self._cache[key] = hit
        return hit

    def clean(self, value: Any) -> Any:
        """Return ``value`` with secret keys of nested mappings replaced by ``***``."""
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if self.is_secret(str(k)) else self.clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        return value


def error_object(exc_type: Any, exc: BaseException | None, tb: Any) -> dict[str, Any]:
    """The ``error`` object of a line: type, message and stack."""
    name = getattr(exc_type, "__name__", str(exc_type))
    stack = "".join(traceback.format_exception(exc_type, exc, tb)) if exc is not None else ""
    return {"type": name, "message": str(exc) if exc is not None else "", "stack": stack}


_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS


def dumps(doc: dict[str, Any]) -> str:
    """Compact JSON; anything JSON cannot hold is written as ``str(value)``."""
    try:
        return orjson.dumps(doc, default=str, option=_ORJSON_OPTS).decode()
    except TypeError:  # e.g. an int beyond 64 bits: the stdlib encoder takes anything
        return json.dumps(doc, ensure_ascii=False, default=str, separators=(",", ":"))


class _Clock:
    """RFC 3339 UTC timestamps with milliseconds; the per-second prefix is cached."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def format(self, ts: float) -> str:
        sec = int(ts)
        if sec != self._sec:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._sec = sec
        return f"{self._prefix}.{int((ts - sec) * 1000):03d}Z"


_OURS = frozenset({NS_KEY, FIELDS_KEY, TRACE_KEY})
_PLAIN = (str, int, float, bool)


class Renderer:
    """Builds output lines. One instance per :func:`clog.init`."""

    def __init__(self, service: str, redactor: Redactor, console: bool) -> None:
        self.service = service
        self.redactor = redactor
        self.console = console
        self._clock = _Clock()

    def _add_fields(self, out: dict[str, Any], fields: Mapping[str, Any]) -> None:
        is_secret = self.redactor.is_secret
        for k, v in fields.items():
            if k in RESERVED:
                k = "_" + k
            if is_secret(k):
                out[k] = REDACTED
            elif v is None or type(v) in _PLAIN:
                out[k] = v
            elif isinstance(v, BaseException):
                out[k] = error_object(type(v), v, v.__traceback__)
            else:
                out[k] = self.redactor.clean(v)

    def line(
        self,
        ts: float,
        level: str,
        msg: str,
        namespace: str | None,
        trace_id: str | None,
        fields: Mapping[str, Any] | None,
        exc: tuple[Any, BaseException | None, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        span_id: str | None = None,
    ) -> str:
        """One output line (no newline). ``extra``: fields bound with loguru directly;
        ``span_id``: the active OpenTelemetry span's id."""
        if fields and "trace_id" in fields:  # an explicit trace_id= is the line's trace id
            fields = dict(fields)
            explicit = fields.pop("trace_id")
            if explicit is not None:
                trace_id = str(explicit)
        if extra and "trace_id" in extra:
            extra = dict(extra)
            explicit = extra.pop("trace_id")
            if explicit is not None:
                trace_id = str(explicit)
        out: dict[str, Any] = {"time": self._clock.format(ts), "level": level}
        if not self.console:
            out["service"] = self.service
        if namespace:
            out["namespace"] = namespace
        out["msg"] = msg
        if trace_id:
            out["trace_id"] = trace_id
        if span_id:
            out["span_id"] = span_id
        if extra:
            self._add_fields(out, extra)
        if fields:
            self._add_fields(out, fields)
        if exc is not None:
            out["error"] = error_object(*exc)
        return self._console(out) if self.console else dumps(out)

    def record_line(
        self,
        record: Mapping[str, Any],
        current_trace_id: str | None,
        span_id: str | None = None,
    ) -> str:
        """The line for a loguru record (stdlib records and loguru-native calls)."""
        extra = record["extra"]
        other = {k: v for k, v in extra.items() if k not in _OURS} if len(extra) > 0 else None
        exc = record["exception"]
        return self.line(
            record["time"].timestamp(),
            record["level"].name.lower(),
            record["message"],
            extra.get(NS_KEY),
            extra.get(TRACE_KEY) or current_trace_id,
            extra.get(FIELDS_KEY),
            (exc.type, exc.value, exc.traceback) if exc is not None else None,
            other,
            span_id,
        )

    def _console(self, out: dict[str, Any]) -> str:
        head = [out.pop("time"), f"{out.pop('level').upper():<8}", self.service]
        ns = out.pop("namespace", None)
        if ns:
            head.append(f"[{ns}]")
        head.append(out.pop("msg"))
        tid = out.pop("trace_id", None)
        sid = out.pop("span_id", None)
        err = out.pop("error", None)
        head.extend(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in out.items())
        if tid:
            head.append(f"trace_id={tid}")
        if sid:
            head.append(f"span_id={sid}")
        text = " ".join(head)
        if err is not None:
            text += "\n" + (err["stack"] or f"{err['type']}: {err['message']}").rstrip("\n")
        return text
