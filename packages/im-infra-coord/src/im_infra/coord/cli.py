"""``im-infra-coord``: manage the config center from a shell.

::

    im-infra-coord config put global/kafka.yaml kafka.yaml     # upload (validated, see below)
    im-infra-coord config get global/kafka.yaml
    im-infra-coord config list im-logic/
    im-infra-coord config watch global/ --prefix
    im-infra-coord config delete im-logic/kafka.yaml

Keys are relative to ``/im-infra/config/{env}/`` (``--env``, default $IM_INFRA_ENV or dev).
``config put`` validates a component's document (``.../{component}.yaml``) against the schema that
the installed package declares (entry-point group ``im_infra.config``) and refuses to write an
invalid one, naming the field; other keys only have to parse as YAML/JSON. A document holding a
secret itself (``password: pw`` rather than ``password: {fromEnv: DB_PASSWORD}``) is refused
unless ``--allow-plaintext`` is given.
Connection settings come from the options or the usual IM_INFRA_ETCD_* variables; the password is
read from $IM_INFRA_ETCD_PASSWORD (never pass it on the command line in shared shells).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath

from im_infra.coord._internal.documents import (
    Layer,
    config_root,
    parse_document,
    resolve_env,
    validate_layers,
)
from im_infra.coord._internal.secretref import (
    FROM_ENV,
    FROM_FILE,
    check_references,
    plaintext_secrets,
)
from im_infra.coord.component import discover_components
from im_infra.coord.config import ConfigEvent
from im_infra.coord.errors import ConfigError, CoordError
from im_infra.coord.provider import ENDPOINTS_VAR, EtcdProvider, connect

PROG = "im-infra-coord"


def _version() -> str:
    try:
        return f"{PROG} {version('im-infra-coord')}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        return f"{PROG} (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Manage im-infra's config center in etcd."
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--endpoints", help=f"comma-separated host:port (default: ${ENDPOINTS_VAR})"
    )
    parser.add_argument("--env", help="environment (default: $IM_INFRA_ENV or dev)")
    parser.add_argument("--user", help="etcd username (password from $IM_INFRA_ETCD_PASSWORD)")
    parser.add_argument("--ca-cert", dest="tls_ca", help="CA certificate (PEM) for TLS")
    parser.add_argument("--cert", dest="tls_cert", help="client certificate (PEM) for TLS")
    parser.add_argument("--key", dest="tls_key", help="client key (PEM) for TLS")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds per etcd call; config watch exits 1 when etcd stays unreachable this long",
    )
    top = parser.add_subparsers(dest="group", required=True)
    config = top.add_parser("config", help="config documents")
    sub = config.add_subparsers(dest="command", required=True)

    put = sub.add_parser(
        "put", help="store a document (a component's document is validated against its schema)"
    )
    put.add_argument("key")
    put.add_argument("file", help="file to upload, or - for stdin")
    put.add_argument(
        "--expect-revision",
        type=int,
        help="only write if the key's mod revision is still this (0: only if absent)",
    )
    put.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="store a document that holds secrets itself instead of referencing them "
        "({fromEnv: NAME} / {fromFile: /path})",
    )

    get = sub.add_parser("get", help="print a document")
    get.add_argument("key")
    get.add_argument("--show-revision", action="store_true", help="print the revision to stderr")

    lst = sub.add_parser("list", help="list documents (key, mod revision, size)")
    lst.add_argument("prefix", nargs="?", default="")

    delete = sub.add_parser("delete", help="delete a document")
    delete.add_argument("key")

    watch = sub.add_parser("watch", help="print every change until interrupted")
    watch.add_argument("key")
    watch.add_argument("--prefix", action="store_true", help="watch every key under KEY")
    watch.add_argument("--count", type=int, default=0, help="exit after this many events")
    return parser


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    with open(source, "rb") as f:
        return f.read()


def validate_document(key: str, data: bytes, *, allow_plaintext: bool = False) -> str | None:
    """Check ``data`` stored at ``key`` against the schema of the component it belongs to
    (``.../{component}.yaml`` for a component an installed package declares), with its secret
    references checked but not read (their secrets are where the services run). Unless
    ``allow_plaintext``, a document holding a secret itself is refused. Returns the component's
    name (None for a key of no known component); raises ConfigError naming the field and the
    problem, never a value."""
    name = PurePosixPath(key).name
    stem, dot, ext = name.rpartition(".")
    if not dot or ext not in ("yaml", "yml", "json"):
        return None
    document = parse_document(data, key)
    spec = discover_components().get(stem)
    try:
        checked = check_references(document, key, placeholder="secret-reference")
        if spec is not None:
            validate_layers(spec.model, [Layer(key, checked)], f"{spec.name} document {key}")
        plaintext = [] if allow_plaintext else plaintext_secrets(document)
        if plaintext:
            fields = ", ".join(f"'{f}'" for f in plaintext)
            raise ConfigError(
                f"{key} holds plain-text secrets in {fields}: reference them instead "
                f"({{{FROM_ENV}: NAME}} or {{{FROM_FILE}: /path}}, see docs/configuration.md), "
                "or pass --allow-plaintext"
            )
    except ConfigError as exc:
        raise ConfigError(f"{exc}; nothing was written") from None
    return spec.name if spec is not None else None


def _endpoints(args: argparse.Namespace) -> list[str]:
    raw = args.endpoints if args.endpoints is not None else os.environ.get(ENDPOINTS_VAR, "")
    found = [e.strip() for e in raw.split(",") if e.strip()]
    if not found:
        raise ConfigError(f"no etcd endpoints: pass --endpoints host:port or set {ENDPOINTS_VAR}")
    return found


def _refused(endpoint: str, timeout: float) -> str | None:
    """Why ``endpoint`` cannot be reached at the TCP level right now (None: it accepts)."""
    address = endpoint.split("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f"{endpoint!r} is not host:port"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _check_reachable(endpoints: list[str], timeout: float) -> None:
    """Fail at once (not after gRPC's whole call timeout) when every endpoint refuses."""
    problems = []
    for endpoint in endpoints:
        problem = _refused(endpoint, min(timeout, 1.0))
        if problem is None:
            return
        problems.append(f"{endpoint}: {problem}")
    raise CoordError(
        "no etcd endpoint reachable (" + "; ".join(problems) + "); check --endpoints "
        f"or ${ENDPOINTS_VAR}"
    )


def _run(args: argparse.Namespace, p: EtcdProvider) -> int:
    cfg = p.config
    if args.command == "put":
        data: bytes = args.data  # read and validated before connecting (main)
        if args.expect_revision is not None:
            if not cfg.compare_and_set(args.key, data, args.expect_revision):
                print(
                    f"error: {args.key} changed (mod revision is not {args.expect_revision})",
                    file=sys.stderr,
                )
                return 1
            print(f"put {cfg.key(args.key)}")
            return 0
        revision = cfg.set(args.key, data)
        print(f"put {cfg.key(args.key)} revision {revision}")
        return 0
    if args.command == "get":
        entry = cfg.get(args.key)
        if entry is None:
            print(f"error: {cfg.key(args.key)} not found", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(entry.value)
        sys.stdout.flush()
        if args.show_revision:
            print(f"mod_revision {entry.mod_revision}", file=sys.stderr)
        return 0
    if args.command == "list":
        for entry in cfg.list(args.prefix):
            print(f"{entry.key}\t{entry.mod_revision}\t{len(entry.value)}")
        return 0
    if args.command == "delete":
        if not cfg.delete(args.key):
            print(f"error: {cfg.key(args.key)} not found", file=sys.stderr)
            return 1
        print(f"deleted {cfg.key(args.key)}")
        return 0
    return _watch(args, p)


def _watch(args: argparse.Namespace, p: EtcdProvider) -> int:
    done = threading.Event()
    seen = 0

    def on_event(event: ConfigEvent) -> None:
        nonlocal seen
        line = f"{event.kind.upper()} {event.key} revision {event.revision}"
        if event.entry is not None:
            line += "\n" + event.entry.text.rstrip("\n")
        print(line, flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    handle = p.config.watch(args.key, on_event, prefix=args.prefix)
    where = p.config.key(args.key) if args.key else p.config.root
    try:
        if not handle.wait_connected(args.timeout):
            print(f"error: etcd unreachable for {args.timeout:g}s; not watching", file=sys.stderr)
            return 1
        print(f"watching {where}", file=sys.stderr)
        down_since: float | None = None
        while not done.wait(0.2):
            if handle.wait_connected(0):
                down_since = None
                continue
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since > args.timeout:
                print(
                    f"error: etcd unreachable for more than {args.timeout:g}s; stopped watching",
                    file=sys.stderr,
                )
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        handle.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``im-infra-coord`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "put":  # a bad document is refused before any etcd call
            args.data = _read(args.file)
            root = config_root(resolve_env(args.env))
            validate_document(
                args.key if args.key.startswith("/") else root + args.key,
                args.data,
                allow_plaintext=args.allow_plaintext,
            )
        endpoints = _endpoints(args)
        _check_reachable(endpoints, args.timeout)
        with connect(
            endpoints,
            username=args.user,
            ca_cert=args.tls_ca,
            cert_cert=args.tls_cert,
            cert_key=args.tls_key,
            timeout=args.timeout,
            env=args.env,
        ) as p:
            return _run(args, p)
    except CoordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
