"""The example files in deploy/systemd are what the docs say: the shared settings load as they
are, and each node's environment file gives the unit the ports and node id it starts with."""

from __future__ import annotations

import re
from pathlib import Path

from adapters.server.settings import load_settings

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def test_the_example_settings_load_as_a_postgresql_cluster_node() -> None:
    settings = load_settings(SYSTEMD / "settings.toml", node_id="node1", http_port=8081)
    assert settings.database_url is not None
    assert settings.trusted_proxies and settings.csrf
    assert settings.relay is not None and settings.mail_lease_seconds >= 2 * 30
    assert settings.node_id == "node1"


def test_every_node_file_sets_what_the_unit_uses() -> None:
    unit = (SYSTEMD / "interactions@.service").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)\}", unit))
    assert used == {"HTTP_PORT", "SMTP_PORT", "NODE_ID"}
    nodes = sorted(SYSTEMD.glob("node-*.env"))
    assert len(nodes) >= 2
    seen: dict[str, set[str]] = {name: set() for name in used}
    for env in nodes:
        values = dict(
            line.split("=", 1)
            for line in env.read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert set(values) == used, env
        for name, value in values.items():
            seen[name].add(value)
    assert all(len(v) == len(nodes) for v in seen.values())  # no two nodes share a port or id
