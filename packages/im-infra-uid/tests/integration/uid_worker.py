"""A child process for the multi-process uid test (run as a script, not collected by pytest).

usage: uid_worker.py ENDPOINTS SERVICE COUNT OUTFILE

Connects to etcd, takes a worker ID with uid.from_coord, prints ``uid-worker: {"ready": worker}``
and waits for a line on stdin (so that all processes hold their IDs at the same time), then
generates COUNT IDs in batches, checks them itself (strictly increasing, own worker ID in every ID),
writes them to OUTFILE as native int64 and prints ``{"done": COUNT, "worker": worker}``.
"""

from __future__ import annotations

import json
import sys
from array import array

from im_infra import coord, uid

MARKER = "uid-worker: "


def say(message: dict[str, object]) -> None:
    """One protocol line; log lines (clog writes JSON to stdout too) do not carry the marker."""
    print(MARKER + json.dumps(message), flush=True)


def main() -> int:
    endpoints, service, count_text, outfile = sys.argv[1:5]
    count = int(count_text)
    with coord.connect(endpoints, timeout=5) as provider:
        gen = uid.from_coord(provider, service)
        say({"ready": gen.worker_id})
        if sys.stdin.readline().strip() != "go":
            return 2
        ids = array("q")
        while len(ids) < count:
            ids.extend(gen.next_ids(min(10_000, count - len(ids))))
        prev = -1
        for value in ids:
            if value <= prev or (value >> 12) & 1023 != gen.worker_id:
                say({"error": f"bad id {value} after {prev}"})
                return 1
            prev = value
        with open(outfile, "wb") as out:
            ids.tofile(out)
        gen.close()
        say({"done": len(ids), "worker": gen.worker_id})
    return 0


if __name__ == "__main__":
    sys.exit(main())
