"""A gRPC server process for the balanced-channel tests (run as a script).

``grpc_worker.py ENDPOINTS SERVICE ID TTL METADATA_JSON``: serve ``/t.Echo/*`` on a free port,
register it with ``rpc.register_server`` (drain delay 3 s, so a late call would still be
served and seen), print ``ready PORT``. A line
``stop`` on stdin runs the helper's ``stop()`` (deregister, drain, stop) and prints
``stopped``. Methods (bytes in, JSON out, each answer names this server's ID):

- ``Who``: the trace id and deadline the handler sees;
- ``Slow``: sleeps the request's milliseconds first (a call in flight);
- ``Hop``: calls ``Who`` on the service named in the request through a balanced channel
  (trace id and deadline must travel on).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc

from im_infra import clog, coord
from im_infra.coord import rpc


def main(endpoints: str, service: str, instance_id: str, ttl: int, meta: dict[str, str]) -> None:
    clog.init(service=f"grpc-worker-{instance_id}", sink=sys.stderr)  # stdout: the protocol
    provider = coord.connect(endpoints, timeout=3)
    channels: dict[str, rpc.BalancedChannel] = {}
    guard = threading.Lock()
    started: list[float] = []

    def answer(**extra: Any) -> bytes:
        return json.dumps({"id": instance_id, **extra}).encode()

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        started.append(time.time())
        return answer(trace=clog.trace_id(), remaining=rpc.inherited_timeout())

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        started.append(time.time())
        time.sleep(int(request or b"0") / 1000)
        return answer()

    def hop(request: bytes, context: grpc.ServicerContext) -> bytes:
        target = request.decode()
        with guard:
            ch = channels.get(target) or channels.setdefault(
                target, rpc.channel(provider.registry, target)
            )
        downstream = ch.unary_unary("/t.Echo/Who")(b"")
        return answer(trace=clog.trace_id(), downstream=json.loads(downstream))

    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Who": grpc.unary_unary_rpc_method_handler(who),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Hop": grpc.unary_unary_rpc_method_handler(hop),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        interceptors=[rpc.TraceServerInterceptor()],
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Echo", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    reg = rpc.register_server(
        provider.registry,
        server,
        service,
        f"127.0.0.1:{port}",
        instance_id=instance_id,
        metadata=meta,
        ttl=ttl,
        drain_delay=3.0,
        grace=10.0,
    )
    print(f"ready {port}", flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            t0 = time.time()
            reg.stop()
            last = max(started) if started else 0.0
            print(f"stopped {t0} {last}", flush=True)
            break
    for ch in channels.values():
        ch.close()
    provider.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]))
