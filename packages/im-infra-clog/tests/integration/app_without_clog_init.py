"""An application that configures logging with ``logging.basicConfig`` and never calls
``clog.init()``, using every im-infra component against real servers. Run by
test_library_logging.py in a fresh process: argv = etcd endpoints, kafka brokers, redis url,
sqlite path, a unique name. Prints one ``RESULT <json>`` line on stdout and nothing else."""

from __future__ import annotations

import io
import json
import logging
import sys
from urllib.parse import urlsplit

from loguru import logger as _loguru
from sqlalchemy import Column, Integer, MetaData, Table, insert

records: list[logging.LogRecord] = []


class Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        records.append(record)


def main() -> None:
    etcd, brokers, redis_url, sqlite_path, unique = sys.argv[1:6]
    text = io.StringIO()
    logging.basicConfig(level=logging.DEBUG, stream=text, format="%(name)s %(message)s")
    capture = Capture()
    logging.getLogger().addHandler(capture)
    root_before = list(logging.getLogger().handlers)
    loguru_before = sorted(_loguru._core.handlers)  # type: ignore[attr-defined]

    from im_infra import cache, coord, db, mq, uid

    with coord.connect(etcd, service=unique, timeout=2) as p:
        p.registry.register(coord.ServiceInstance(unique, "n1", "10.0.0.1:1"), ttl=5)
        with p.lock.acquire(unique, ttl=5, timeout=5):
            pass
        gen = uid.from_coord(p, unique)
        gen.next_id()
    gen.close()

    items = Table("items", MetaData(), Column("id", Integer, primary_key=True))
    with db.new(unique, dsn=f"sqlite:///{sqlite_path}") as d:
        with d.transaction() as s:
            items.metadata.create_all(s.connection())
            s.execute(insert(items).values(id=1))
        try:
            with d.transaction() as s:
                s.execute(insert(items).values(id=1))
        except db.IntegrityError:
            pass

    parts = urlsplit(redis_url)
    address = f"{parts.hostname}:{parts.port or 6379}"
    with cache.new(unique, address=address, db=int(parts.path[1:] or 0)) as c:
        c.set(f"{unique}:k", "v")
        assert c.get(f"{unique}:k") == "v"
        c.delete(f"{unique}:k")

    with mq.new_producer(unique, common={"brokers": [brokers]}) as producer:
        producer.flush(5) if hasattr(producer, "flush") else None

    result = {
        "root_handlers_unchanged": logging.getLogger().handlers == root_before,
        "root_level": logging.getLogger().level,
        "loguru_unchanged": sorted(_loguru._core.handlers) == loguru_before,  # type: ignore[attr-defined]
        "names": sorted({r.name for r in records}),
        "errors": [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR],
        "text_lines": len(text.getvalue().splitlines()),
    }
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
