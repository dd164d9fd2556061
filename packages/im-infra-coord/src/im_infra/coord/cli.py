"""``im-infra-coord``: manage the config center from a shell.

::

    im-infra-coord config put global/kafka.yaml kafka.yaml     # upload (validated as YAML)
    im-infra-coord config get global/kafka.yaml
    im-infra-coord config list im-logic/
    im-infra-coord config watch global/ --prefix
    im-infra-coord config delete im-logic/kafka.yaml

Keys are relative to ``/im-infra/config/{env}/`` (``--env``, default $IM_INFRA_ENV or dev).
Connection settings come from the options or the usual IM_INFRA_ETCD_* variables; the password is
read from $IM_INFRA_ETCD_PASSWORD (never pass it on the command line in shared shells).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from im_infra.coord.config import ConfigEvent
from im_infra.coord.errors import CoordError
from im_infra.coord.provider import EtcdProvider, connect


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="im-infra-coord", description="Manage im-infra's config center in etcd."
    )
    parser.add_argument("--endpoints", help="comma-separated host:port (default: env)")
    parser.add_argument("--env", help="environment (default: $IM_INFRA_ENV or dev)")
    parser.add_argument("--user", help="etcd username (password from $IM_INFRA_ETCD_PASSWORD)")
    parser.add_argument("--ca-cert", dest="tls_ca", help="CA certificate (PEM) for TLS")
    parser.add_argument("--cert", dest="tls_cert", help="client certificate (PEM) for TLS")
    parser.add_argument("--key", dest="tls_key", help="client key (PEM) for TLS")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per etcd call")
    top = parser.add_subparsers(dest="group", required=True)
    config = top.add_parser("config", help="config documents")
    sub = config.add_subparsers(dest="command", required=True)

    put = sub.add_parser("put", help="store a document (YAML/JSON keys are validated)")
    put.add_argument("key")
    put.add_argument("file", help="file to upload, or - for stdin")
    put.add_argument(
        "--expect-revision",
        type=int,
        help="only write if the key's mod revision is still this (0: only if absent)",
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
    return Path(source).read_bytes()


def _run(args: argparse.Namespace, p: EtcdProvider) -> int:
    cfg = p.config
    if args.command == "put":
        data = _read(args.file)
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
    if handle.wait_connected(args.timeout):
        print(f"watching {p.config.key(args.key) if args.key else p.config.root}", file=sys.stderr)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``im-infra-coord`` command."""
    args = _parser().parse_args(argv)
    try:
        with connect(
            args.endpoints,
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
