"""Render ``deploy/haproxy.cfg`` for other ports and any number of nodes.

The shipped file is a working example for two local nodes; its lines ending in ``# @frontend``
and ``# @node`` are the placeholders (see the file's header). ``render`` rewrites them:

* a ``# @frontend`` line's address (``bind <address>``) becomes ``frontend``;
* each run of consecutive ``# @node`` lines (one backend's servers) becomes one line per node,
  made from the run's first line with its server name and address replaced (the name also
  wherever else it appears as a word: ``track api/node1``, ``cookie node1``).

Used by ``deploy/cluster.py`` (``make cluster``) and the cluster tests (``tests/cluster``).
Checking the result is HAProxy's job: ``check`` runs ``haproxy -c -f``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().with_name("haproxy.cfg")
FRONTEND_MARK = "# @frontend"
NODE_MARK = "# @node"
_SERVER = re.compile(r"^(?P<indent>\s*)server\s+(?P<name>\S+)\s+(?P<address>\S+)(?P<rest>.*)$")
_BIND = re.compile(r"^(?P<head>\s*bind\s+)(?P<address>\S+)(?P<rest>.*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


@dataclass(frozen=True)
class Node:
    """One ``interactions serve`` process as HAProxy sees it: its node id and HTTP address."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class TemplateError(ValueError):
    """The template lacks a placeholder, or a node's name is unusable in HAProxy."""


def render(nodes: Sequence[Node], frontend: str, template: str | None = None) -> str:
    """The configuration for ``nodes`` behind ``frontend`` (``host:port``)."""
    if not nodes:
        raise TemplateError("at least one node is needed")
    names = [n.name for n in nodes]
    for name in names:
        if not _NAME.match(name):
            raise TemplateError(f"node name {name!r}: letters, digits and . _ : - only")
    if len(set(names)) != len(names):
        raise TemplateError(f"node names must be distinct: {names}")
    text = TEMPLATE.read_text() if template is None else template
    out: list[str] = []
    run: list[str] = []
    frontends = runs = 0

    def flush() -> None:
        nonlocal runs
        if not run:
            return
        runs += 1
        found = _SERVER.match(run[0].split(NODE_MARK)[0].rstrip())
        if found is None:
            raise TemplateError(f"a {NODE_MARK} line is not a server line: {run[0]!r}")
        sample = found["name"]
        rest = found["rest"]
        for node in nodes:
            tail = re.sub(rf"(?<![\w.:-]){re.escape(sample)}(?![\w.:-])", node.name, rest)
            out.append(f"{found['indent']}server {node.name} {node.address}{tail}")
        run.clear()

    for line in text.splitlines():
        if line.rstrip().endswith(NODE_MARK):
            run.append(line)
            continue
        flush()
        if line.rstrip().endswith(FRONTEND_MARK):
            bind = _BIND.match(line.split(FRONTEND_MARK)[0].rstrip())
            if bind is None:
                raise TemplateError(f"a {FRONTEND_MARK} line is not a bind line: {line!r}")
            frontends += 1
            out.append(f"{bind['head']}{frontend}{bind['rest']}")
            continue
        out.append(line)
    flush()
    if not frontends or not runs:
        raise TemplateError(f"the template needs a {FRONTEND_MARK} line and {NODE_MARK} lines")
    return "\n".join(out) + "\n"


def haproxy_binary() -> str:
    """The ``haproxy`` executable, or a RuntimeError naming the package to install."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError(
            "haproxy is not installed: `make test` installs it (apt-get install haproxy)"
        )
    return found


def check(path: Path) -> None:
    """``haproxy -c -f path``: a RuntimeError with HAProxy's words if the file is invalid."""
    result = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"haproxy -c -f {path}:\n{result.stdout}{result.stderr}")
