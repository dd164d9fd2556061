"""Secret references in config documents: ``{fromEnv: NAME}`` and ``{fromFile: /path}``.

A secret field (a field :func:`~im_infra.coord._internal.redact.is_secret_name` calls secret, or
any field inside such a section, like ``sasl.username``) may name where its value is instead of
holding it. Documents (etcd, ``$IM_INFRA_CONFIG_DIR``) are resolved every time a component's
config is built: at load time and on every live reload. ``plaintext_secrets`` finds the secret
values a document carries itself, for ``im-infra-coord config put``'s refusal.

Errors name the field, the document and the reference, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from im_infra.coord._internal.redact import is_secret_name, secrets_in
from im_infra.coord.errors import ConfigError

FROM_ENV = "fromEnv"
FROM_FILE = "fromFile"
KINDS = (FROM_ENV, FROM_FILE)
MAX_FILE_BYTES = 64 * 1024

Kind = Literal["fromEnv", "fromFile"]


@dataclass(frozen=True)
class Reference:
    """Where a secret is: an environment variable or a file."""

    kind: Kind
    target: str

    def __str__(self) -> str:
        return f"{{{self.kind}: {self.target}}}"


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out or "(document)"


def _reference(node: Mapping[Any, Any], where: str) -> Reference | None:
    """The reference ``node`` is, None if it is an ordinary mapping; ConfigError if malformed."""
    kinds = [k for k in KINDS if k in node]
    if not kinds:
        return None
    target = node[kinds[0]]
    if len(node) != 1 or not isinstance(target, str) or not target.strip():
        raise ConfigError(
            f"{where}: a secret reference is {{{FROM_ENV}: NAME}} or {{{FROM_FILE}: /path}} "
            f"(one key, a non-empty string), got a mapping with keys {sorted(map(str, node))}"
        )
    kind: Kind = "fromEnv" if kinds[0] == FROM_ENV else "fromFile"
    return Reference(kind, target.strip())


def map_references(
    data: Mapping[str, Any], source: str, value_of: Callable[[Reference, str], str]
) -> dict[str, Any]:
    """``data`` with every secret reference replaced by ``value_of(reference, where)``.

    ``where`` ("field 'x' from SOURCE: reference ...") prefixes the caller's errors. A reference
    outside a secret field, or a malformed one, raises ConfigError naming the field."""

    def walk(node: Any, parts: tuple[str | int, ...], secret: bool) -> Any:
        if isinstance(node, Mapping):
            where = f"field '{_path(parts)}' from {source}"
            ref = _reference(node, where)
            if ref is None:
                return {
                    k: walk(v, (*parts, str(k)), secret or is_secret_name(str(k)))
                    for k, v in node.items()
                }
            if not secret:
                raise ConfigError(
                    f"{where}: secret reference {ref} in a field that is not a secret; "
                    "references are accepted in secret fields only (password, token, dsn, sasl, "
                    "...); set other fields in the document or from the environment layer"
                )
            return value_of(ref, f"{where}: secret reference {ref}")
        if isinstance(node, list):
            return [walk(item, (*parts, i), secret) for i, item in enumerate(node)]
        return node

    return dict(walk(data, (), False))


def read_reference(ref: Reference, where: str, environ: Mapping[str, str]) -> str:
    """The secret ``ref`` points to: the variable's value, or the file's text without one
    trailing newline. ConfigError (naming ``where``, never a value) when it cannot be had."""
    if ref.kind == FROM_ENV:
        value = environ.get(ref.target)
        if value is None:
            raise ConfigError(f"{where}: environment variable {ref.target} is not set")
        if not value:
            raise ConfigError(f"{where}: environment variable {ref.target} is empty")
        return value
    if not os.path.isabs(ref.target):
        raise ConfigError(f"{where}: the path must be absolute")
    try:
        with open(ref.target, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: the file is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the file is not UTF-8 text") from None
    # one trailing newline, as `echo pw > file` and most editors write (Kubernetes convention)
    text = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    if not text:
        raise ConfigError(f"{where}: the file is empty")
    return text


def resolve_references(
    data: Mapping[str, Any], source: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], set[str]]:
    """``data`` with its references replaced by their secrets, and the set of those secrets
    (for redaction). ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    found: set[str] = set()

    def value_of(ref: Reference, where: str) -> str:
        value = read_reference(ref, where, env)
        found.add(value)
        return value

    return map_references(data, source, value_of), found


def check_references(data: Mapping[str, Any], source: str, placeholder: str) -> dict[str, Any]:
    """``data`` with every reference replaced by ``placeholder`` after checking its syntax and
    place (for validating a document where its secrets are not available)."""
    return map_references(data, source, lambda _ref, _where: placeholder)


def plaintext_secrets(data: Mapping[str, Any]) -> list[str]:
    """The paths of the fields of ``data`` holding a secret in plain text: a non-empty scalar in a
    field named like a secret (a URL there only if it carries a password), and a password inside
    a URL in any field. References and empty values are not secrets."""
    found: list[str] = []

    def walk(node: Any, parts: tuple[str | int, ...], secret: bool) -> None:
        if isinstance(node, Mapping):
            if _reference(node, f"field '{_path(parts)}'") is None:
                for k, v in node.items():
                    walk(v, (*parts, str(k)), is_secret_name(str(k)))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, (*parts, i), secret)
        elif isinstance(node, str) and secrets_in(node):  # a password inside a URL
            found.append(_path(parts))
        elif secret and isinstance(node, str | int | float) and not isinstance(node, bool):
            text = str(node)
            if text and "://" not in text:
                found.append(_path(parts))

    walk(data, (), False)
    return found
