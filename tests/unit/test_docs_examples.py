"""The Python examples in the docs run, so they stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks() -> list[tuple[str, str]]:
    found = []
    for page in ("testing.md", "custom-operations.md", "embedding.md"):
        for n, code in enumerate(BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))):
            found.append((f"{page}#{n}", code))
    return found


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_example_runs(where: str, code: str) -> None:
    exec(compile(code, where, "exec", dont_inherit=True), {"__name__": "docs_example"})


def test_lifecycle_page_is_generated_from_the_machine() -> None:
    from interactions_core.diagram import render_page

    assert (DOCS / "lifecycle.md").read_text(encoding="utf-8") == render_page(), (
        "docs/lifecycle.md is stale: run `make diagram`"
    )
