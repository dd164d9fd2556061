"""Secret redaction for config errors and log lines (one implementation for every component).

A value is a secret when it sits under a field whose name looks like one (``password``,
``token``, ``dsn``, ... the patterns of :data:`im_infra.clog.DEFAULT_REDACT`) or when it is the
password inside a URL (``redis://user:pw@host``). :func:`redact` removes both from any text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from im_infra.clog import DEFAULT_REDACT

MASK = "***"

_SECRET_NAME = re.compile("|".join(re.escape(f) for f in DEFAULT_REDACT), re.IGNORECASE)
# scheme://user:password@ (the user part may be empty: redis://:pw@host)
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@'\"]*@")


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret."""
    return _SECRET_NAME.search(name) is not None


def secrets_in(data: Any, *, under_secret: bool = False) -> set[str]:
    """Every secret value inside ``data``: strings under secret-looking keys, SecretStr values
    and passwords inside URLs (recursively through mappings and lists)."""
    found: set[str] = set()
    if isinstance(data, Mapping):
        for key, value in data.items():
            found |= secrets_in(value, under_secret=under_secret or is_secret_name(str(key)))
    elif isinstance(data, list | tuple):
        for item in data:
            found |= secrets_in(item, under_secret=under_secret)
    elif isinstance(data, SecretStr):
        found.add(data.get_secret_value())
    elif isinstance(data, str | int | float) and not isinstance(data, bool):
        text = str(data)
        if under_secret:
            found.add(text)
        elif isinstance(data, str):
            for match in _URL_CREDENTIALS.finditer(text):
                password = match.group(0)[len(match.group("head")) : -1]
                if password:
                    found.add(password)
    return {s for s in found if s}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL credentials and every value of ``secrets`` replaced by ``***``."""
    out = _URL_CREDENTIALS.sub(lambda m: m.group("head") + MASK + "@", text)
    # longest first, so a secret containing another one is masked whole
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:  # shorter ones would mask ordinary letters of the message
            out = out.replace(secret, MASK)
    return out
