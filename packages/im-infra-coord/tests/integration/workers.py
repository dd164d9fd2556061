"""Worker processes for coord's multi-process integration tests (run as a script).

- ``alloc ENDPOINTS SERVICE THREADS TTL``: allocate THREADS instance IDs, print them as one JSON
  object, then hold them until killed;
- ``lock ENDPOINTS NAME THREADS ROUNDS FILE``: THREADS contenders each take the lock ROUNDS
  times, counting holders in FILE (the shared counter);
- ``hold-lock ENDPOINTS NAME TTL``: take the lock, print "held", hold it until killed;
- ``register ENDPOINTS SERVICE ID TTL``: register, print "registered", wait to be killed;
- ``warn``: log one warning, print "done" (checks that logs stay off stdout);
- ``serve ENDPOINTS SERVICE TTL``: register, take an instance ID and a lock (all with TTL), print
  them as one JSON object, and on SIGTERM close the provider (graceful shutdown), print
  "closed" and exit 0.

stdout carries only these results, one per line, for the test to parse; the workers' own log
lines (clog JSON: a "lease lost" warning when a loaded machine delays a keepalive, a retry) go to
stderr. With both on stdout a log line could arrive first and be parsed as the result.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
import time

from im_infra import clog, coord


def _counter_step(path: str, delta: int) -> int:
    """Add ``delta`` to the 'holders now' counter in ``path`` (under flock); track the max."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 100).decode() or "0 0 0"
        now, peak, total = (int(x) for x in raw.split())
        now += delta
        peak = max(peak, now)
        total += 1 if delta > 0 else 0
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{now} {peak} {total}".encode())
        return now
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def alloc(endpoints: str, service: str, threads: int, ttl: int) -> None:
    ids: list[int] = []
    providers: list[coord.EtcdProvider] = []
    errors: list[str] = []
    guard = threading.Lock()
    barrier = threading.Barrier(threads)

    def one() -> None:
        p = coord.connect(endpoints, timeout=10)
        with guard:
            providers.append(p)
        barrier.wait()
        try:
            got = p.instance_for(service, ttl=ttl).instance_id()
        except coord.CoordError as exc:
            with guard:
                errors.append(repr(exc))
            return
        with guard:
            ids.append(got)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    print(json.dumps({"ids": ids, "errors": errors}), flush=True)
    time.sleep(3600)


def lock(endpoints: str, name: str, threads: int, rounds: int, path: str) -> None:
    p = coord.connect(endpoints, timeout=10)
    failures: list[str] = []

    def contend() -> None:
        for _ in range(rounds):
            try:
                with p.lock.acquire(name, ttl=5, timeout=60):
                    _counter_step(path, +1)
                    time.sleep(0.005)
                    _counter_step(path, -1)
            except coord.CoordError as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=contend) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    p.close()
    print(json.dumps({"failures": failures}), flush=True)


def hold_lock(endpoints: str, name: str, ttl: int) -> None:
    p = coord.connect(endpoints, timeout=10)
    p.lock.acquire(name, ttl=ttl, timeout=10)
    print("held", flush=True)
    time.sleep(3600)


def register(endpoints: str, service: str, instance_id: str, ttl: int) -> None:
    p = coord.connect(endpoints, timeout=10)
    p.registry.register(coord.ServiceInstance(service, instance_id, "127.0.0.1:1"), ttl=ttl)
    print("registered", flush=True)
    time.sleep(3600)


def serve(endpoints: str, service: str, ttl: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    p = coord.connect(endpoints, service=service, timeout=10)
    p.registry.register(coord.ServiceInstance(service, "n1", "127.0.0.1:1"), ttl=ttl)
    instance_id = p.instance_for(service, ttl=ttl).instance_id()
    p.lock.acquire(service, ttl=ttl, timeout=10)
    print(json.dumps({"instance_id": instance_id}), flush=True)
    while not stop.wait(0.05):
        pass
    p.close()  # deregister, release the lock and the instance ID, revoke the leases
    print("closed", flush=True)


def main() -> None:
    clog.init(service="coord-test-worker", level="WARNING", sink=sys.stderr)
    cmd, *args = sys.argv[1:]
    if cmd == "alloc":
        alloc(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "lock":
        lock(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif cmd == "hold-lock":
        hold_lock(args[0], args[1], int(args[2]))
    elif cmd == "register":
        register(args[0], args[1], args[2], int(args[3]))
    elif cmd == "warn":
        clog.get_logger("worker").warning("a warning before the result")
        print("done", flush=True)
    elif cmd == "serve":
        serve(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown worker command {cmd!r}")


if __name__ == "__main__":
    main()
