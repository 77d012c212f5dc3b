"""A child process for the multi-process tests (``test_postgres_processes.py``).

Usage: ``python worker.py COMMAND DSN [ARGS]``; it reports on stdout, one line per event.

* ``race DSN ID``: load the interaction, print ``loaded``, wait for a line on stdin (the parent
  sends it once every racer has loaded), then update it and commit; print ``won`` or
  ``conflict``.
* ``bump DSN ID ROUNDS``: ROUNDS times, read-increment-write ``user_data["count"]``, retrying
  on ``ConcurrencyConflict`` (never losing an update); print ``done CONFLICTS``.
* ``migrate DSN``: ``migrate(dsn)``; print the versions applied as JSON.
"""

from __future__ import annotations

import json
import os
import sys

from adapters.postgres import PostgresStore, migrate
from interactions_core.errors import ConcurrencyConflict


def race(dsn: str, iid: str) -> str:
    with PostgresStore(dsn, migrate=False) as store, store.unit_of_work() as uow:
        current = uow.interactions.get(iid)
        if current is None:
            return "missing"
        print("loaded", flush=True)
        sys.stdin.readline()
        uow.interactions.update(current.model_copy(update={"owner": f"pid{os.getpid()}"}))
        try:
            uow.commit()
        except ConcurrencyConflict:
            return "conflict"
        return "won"


def bump(dsn: str, iid: str, rounds: int) -> str:
    conflicts = 0
    with PostgresStore(dsn, migrate=False, pool_size=2) as store:
        for _ in range(rounds):
            while True:
                with store.unit_of_work() as uow:
                    current = uow.interactions.get(iid)
                    if current is None:
                        return "missing"
                    count = int(current.user_data["count"]) + 1
                    uow.interactions.update(
                        current.model_copy(update={"user_data": {"count": count}})
                    )
                    try:
                        uow.commit()
                        break
                    except ConcurrencyConflict:
                        conflicts += 1
    return f"done {conflicts}"


def main(argv: list[str]) -> int:
    command, dsn = argv[1], argv[2]
    if command == "race":
        print(race(dsn, argv[3]), flush=True)
    elif command == "bump":
        print(bump(dsn, argv[3], int(argv[4])), flush=True)
    elif command == "migrate":
        print(json.dumps(migrate(dsn)), flush=True)
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
