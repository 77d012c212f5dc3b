"""The ``cluster`` fixture: two server processes on a fresh database of the session's
PostgreSQL (``postgres_dsn``), a relay sink in this process, HAProxy in front; stopped
whatever happens. ``make_cluster`` builds others (more nodes, other settings)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Cluster, MailSink, haproxy_config


@pytest.fixture(scope="session")
def haproxy_available() -> None:
    try:
        haproxy_config().haproxy_binary()
    except RuntimeError as exc:
        # make test installs it (node-deps); anywhere else, say what is missing.
        pytest.fail(str(exc))


@pytest.fixture
def sink() -> Iterator[MailSink]:
    relay = MailSink().start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def make_cluster(
    haproxy_available: None, postgres_dsn: str, tmp_path: Path, sink: MailSink
) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(nodes=2, **options)``: a started ``Cluster`` (options as its fields)."""
    started: list[Cluster] = []

    def make(nodes: int = 2, **options: Any) -> Cluster:
        options.setdefault("relay", sink)
        cluster = Cluster(postgres_dsn, tmp_path / f"cluster{len(started)}", nodes=nodes, **options)
        started.append(cluster)
        cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(started):
            cluster.stop()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()
