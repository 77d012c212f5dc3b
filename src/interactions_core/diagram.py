"""Export the lifecycle machine as Mermaid: ``python -m interactions_core.diagram [FILE]``.

With a FILE (e.g. ``docs/lifecycle.md``) the page is written; without, the diagram is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .lifecycle import DEFAULT, Lifecycle


def render_page(lifecycle: Lifecycle = DEFAULT) -> str:
    """The lifecycle page: its diagram and the capabilities of every state. An engine with
    custom operations renders its own (``Engine.lifecycle``)."""
    rows = "\n".join(
        f"| `{s}` | {', '.join(f'`{c}`' for c in lifecycle.capabilities(s)) or '—'} |"
        for s in lifecycle.states
    )
    return (
        "# Interaction lifecycle\n\n"
        "Generated from the one shared `transitions` machine "
        "(`python -m interactions_core.diagram docs/lifecycle.md`); do not edit by hand.\n"
        "System triggers are in italics; `[outbound]` / `[returning]` are conditions.\n\n"
        "```mermaid\n" + lifecycle.to_mermaid() + "```\n\n"
        "## Capabilities per state\n\n"
        "Computed from the machine: the agent operations it accepts in that state. A "
        "notification carries them only to the agent entitled to act (the owner; the invitee "
        "while `Invited`; agents with access to the workbin while `InWorkbin`); anyone else "
        "gets `[]`.\n\n"
        "| state | capabilities |\n|---|---|\n" + rows + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stdout.write(DEFAULT.to_mermaid())
        return 0
    Path(args[0]).write_text(render_page(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
