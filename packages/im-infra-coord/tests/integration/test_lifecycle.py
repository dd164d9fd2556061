"""close() stops every background thread coord started."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel

from im_infra import coord


class Doc(BaseModel):
    a: int = 0


def coord_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("im-infra-coord")]


def test_close_stops_background_threads(etcd_endpoints: str, unique: str, wait_for: Any) -> None:
    before = set(coord_threads())
    p = coord.connect(etcd_endpoints, service=unique, env=unique)
    p.registry.register(coord.ServiceInstance(unique, "a", "h:1"), ttl=3)
    p.registry.discover(unique)
    p.registry.watch(f"{unique}-other", lambda _xs: None)
    p.config.watch("x/", lambda _ev: None, prefix=True)
    live = p.config.component("doc", Doc)
    lock = p.lock.acquire(unique, ttl=3)
    p.instance.instance_id()
    started = set(coord_threads()) - before
    assert started
    assert all(t.daemon for t in started)
    assert lock.held
    p.close()
    wait_for(lambda: not (set(coord_threads()) - before), 5, "coord threads gone after close()")
    assert not lock.held
    assert live.value == Doc()
    with coord.connect(etcd_endpoints) as q:
        assert q.registry.discover(unique) == []  # deregistered by close()
        assert q.client.range(f"/im-infra/instance/{unique}/", prefix=True).kvs == []
