"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a temporary
directory, a free port on 127.0.0.1, trust authentication, stopped whatever happens.

PostgreSQL refuses to run as root, and CI runs as root: then ``initdb`` and ``postgres`` run as
the unprivileged ``postgres`` user the Debian package creates (``runuser``), in a directory
that user owns. As any other user they run as that user.

``make test`` installs the server (``apt-get install postgresql``) when it is missing; the
binaries are looked up in ``/usr/lib/postgresql/<major>/bin`` (newest first) or through
``INTERACTIONS_TEST_PG_BIN``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ports import free_port

__all__ = ["PostgresCluster", "find_bin_dir"]


def find_bin_dir() -> Path:
    """The directory of ``initdb``/``pg_ctl``/``postgres``; names what to install if absent."""
    given = os.environ.get("INTERACTIONS_TEST_PG_BIN")
    if given:
        return Path(given)
    root = Path("/usr/lib/postgresql")
    majors = sorted(
        (p for p in root.iterdir() if (p / "bin" / "initdb").exists()) if root.exists() else (),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
        reverse=True,
    )
    if majors:
        return majors[0] / "bin"
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL's server binaries are not installed: `make test` installs them "
        "(apt-get install postgresql), or set INTERACTIONS_TEST_PG_BIN to their directory"
    )


# Run by a detached Python: when the test run (argv[1]) is gone, stop the server's process group
# (argv[2]) at once and remove its directory (argv[3]). Polls once a second.
_WATCHDOG = """
import os, shutil, signal, sys, time
parent, server, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
for sig in (signal.SIGQUIT, signal.SIGKILL):
    try:
        os.killpg(server, sig)
    except ProcessLookupError:
        break
    time.sleep(2)
shutil.rmtree(root, ignore_errors=True)
"""


class PostgresCluster:
    """One ``postgres`` server process on its own data directory; ``stop()`` (also called at
    exit) kills it and removes the directory. A watchdog process does the same if the test
    run itself dies without running ``stop()`` (SIGKILL, SIGTERM, a crash)."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="interactions-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = free_port()
        self.user = "postgres"
        self._as_other = os.geteuid() == 0
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.log = self.root / "postgres.log"

    # --- running things as the server's user ---------------------------------------------

    def _cmd(self, *args: str) -> list[str]:
        if self._as_other:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def start(self) -> PostgresCluster:
        self.sockets.mkdir(parents=True)
        if self._as_other:
            # The postgres user must own its directories (and be able to reach them).
            self.root.chmod(0o755)
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        else:
            self.user = os.environ.get("USER") or "postgres"
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        log = open(self.log, "wb")  # noqa: SIM115 - handed to the server process
        if self._as_other:
            shutil.chown(self.log, "postgres", "postgres")
        self._process = subprocess.Popen(
            self._cmd(
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.sockets),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",  # a throwaway cluster: durability comes from the tests' design
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=64MB",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        atexit.register(self.stop)
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(os.getpid()),
                str(self._process.pid),
                str(self.root),
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not self._accepts():
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("postgres did not accept connections within 60 s")
            time.sleep(0.05)
        return self

    def _accepts(self) -> bool:
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-q",
            ],
            capture_output=True,
        )
        return result.returncode == 0

    def stop(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.poll() is None:
            watchdog.kill()
            watchdog.wait(timeout=20)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # SIGQUIT: immediate shutdown (the data is thrown away anyway).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGQUIT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases --------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, never input
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg

        name = dsn.rsplit("/", 1)[-1]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
