"""A cluster node for the leader-election tests (``test_leader.py``): one ``LeaderLock`` in a
process of its own, as a server process would run it.

Usage: ``python leader_node.py DSN NODE_ID [CHECK_INTERVAL_S]``. Its application name is
``leader-node-NODE_ID`` (so its lock connection is ``leader-node-NODE_ID-leader``). It prints
one JSON line per event, flushed at once, with the wall time (``time.time()``, the same clock
as the parent's, for the failover figures): ``started``, ``elected``, ``deposed``, ``stopped``.
It runs until its stdin closes (the parent ends it, or dies), then stops the lock; the tests
mostly SIGKILL it instead.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from adapters.postgres import LeaderLock

_out = threading.Lock()


def say(event: str, node: str) -> None:
    line = json.dumps({"event": event, "node": node, "pid": os.getpid(), "t": time.time()})
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    dsn, node = argv[1], argv[2]
    interval = float(argv[3]) if len(argv) > 3 else 1.0
    lock = LeaderLock(
        dsn,
        application_name=f"leader-node-{node}",
        check_interval_s=interval,
        connect_timeout_s=5.0,
        node_id=node,
        on_elected=lambda: say("elected", node),
        on_deposed=lambda: say("deposed", node),
    )
    lock.start()
    say("started", node)
    try:
        sys.stdin.read()  # until EOF
    finally:
        lock.stop()
        say("stopped", node)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
