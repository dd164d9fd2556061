"""Call a service by name over gRPC, balanced across its registered instances.

The Python form of the Go registry's ``GetConnection`` (an ``etcd:///`` resolver): grpcio has no
resolver plugin API, so :func:`channel` / :func:`aio_channel` return channel objects of their own
(``grpc.Channel`` / ``grpc.aio.Channel``) that generated stubs take as they are::

    from im_infra.coord import rpc

    ch = rpc.channel(provider.registry, "im-logic", balancer="consistent_hash",
                     filters={"version": "v2"}, idempotent={"/chat.Logic/GetMessages"})
    with rpc.route_key(user_id):
        reply = LogicStub(ch).GetMessages(req, timeout=2)

Server side: :func:`register_server` (deregister first, then drain) and
:class:`TraceServerInterceptor` (binds the caller's trace id in clog). This module is imported
only by code that uses it (``import im_infra.coord`` does not load it).
"""

from im_infra.coord.rpc._internal.pool import NoReadyInstance
from im_infra.coord.rpc.aio import AioBalancedChannel, aio_channel
from im_infra.coord.rpc.balancer import (
    ROUTE_KEY_METADATA,
    Balancer,
    ConsistentHash,
    Node,
    PowerOfTwoChoices,
    RoundRobin,
    current_route_key,
    route_key,
)
from im_infra.coord.rpc.channel import BalancedChannel, channel
from im_infra.coord.rpc.context import TRACE_ID_METADATA, deadline, inherited_timeout
from im_infra.coord.rpc.server import (
    AioServerRegistration,
    AioTraceServerInterceptor,
    ServerRegistration,
    TraceServerInterceptor,
    register_aio_server,
    register_server,
)

__all__ = [
    "ROUTE_KEY_METADATA",
    "TRACE_ID_METADATA",
    "AioBalancedChannel",
    "AioServerRegistration",
    "AioTraceServerInterceptor",
    "BalancedChannel",
    "Balancer",
    "ConsistentHash",
    "NoReadyInstance",
    "Node",
    "PowerOfTwoChoices",
    "RoundRobin",
    "ServerRegistration",
    "TraceServerInterceptor",
    "aio_channel",
    "channel",
    "current_route_key",
    "deadline",
    "inherited_timeout",
    "register_aio_server",
    "register_server",
    "route_key",
]
