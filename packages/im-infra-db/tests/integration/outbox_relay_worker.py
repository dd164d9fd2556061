"""An outbox relay process for the SIGKILL tests.

Usage: python outbox_relay_worker.py DB_URL TABLE kafka BROKERS
       python outbox_relay_worker.py DB_URL TABLE file OUTFILE

``kafka`` publishes through im_infra.mq's producer as it is (messages are ``mq.Message``s with a
``relay`` header naming this process); ``file`` through a recording publisher that appends
``pid key value`` lines with an unbuffered write before it reports the delivery (so a line exists
for every event the relay may have marked sent).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from im_infra import clog, db, mq


@dataclass
class Line:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class FilePublisher:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def send(self, msg: Line, callback: db.DeliveryReport | None = None) -> None:
        line = b"%d %s %s\n" % (os.getpid(), msg.key or b"-", msg.value or b"")
        os.write(self.fd, line)
        if callback is not None:
            callback(None)

    def flush(self, timeout: float | None = None) -> int:
        return 0


def main() -> None:
    url, table, mode, target = sys.argv[1:5]
    clog.init(service="it-outbox-relay", level="WARNING")
    provider = db.new("it-outbox-relay", dsn=url, pool_size=2, connect_timeout=60)
    relay: db.OutboxRelay[mq.Message] | db.OutboxRelay[Line]
    if mode == "kafka":
        producer = mq.new_producer("it-outbox-relay", common={"brokers": [target]})
        pid = str(os.getpid()).encode()

        def message(
            topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes]
        ) -> mq.Message:
            return mq.Message(topic, key, value, {**headers, "relay": pid})

        relay = db.OutboxRelay(
            provider, producer, message=message, table=table, batch_size=50, poll_interval=0.02
        )
    else:
        relay = db.OutboxRelay(
            provider,
            FilePublisher(target),
            message=Line,
            table=table,
            batch_size=50,
            poll_interval=0.02,
        )
    signal.signal(signal.SIGTERM, lambda *_: relay.close())
    print("ready", flush=True)
    relay.run()


if __name__ == "__main__":
    main()
