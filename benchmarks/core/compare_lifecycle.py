"""Compare ``bench_lifecycle.py`` on another commit and on the working tree, in one run.

Run: ``.venv/bin/python benchmarks/core/compare_lifecycle.py BASE_REV [ROUNDS]``. The base
commit's ``src/`` and ``benchmarks/`` are exported (``git archive``) to a temporary folder; the
two benchmarks then run alternately, ROUNDS times each (default 5), each in its own process, so
machine noise falls on both alike. Prints the median µs per operation of each side and the
ratio new / base (the library issue's bound: at most 1.05 per operation).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\s*(.+?):\s+([\d.]+) µs(?:/op)?")


def run(src: Path, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    ).stdout
    found = {}
    for line in out.splitlines():
        match = LINE.match(line)
        if match:
            found[match.group(1).strip()] = float(match.group(2))
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    base_rev, rounds = argv[0], int(argv[1]) if len(argv) > 1 else 5
    archive = subprocess.run(
        ["git", "archive", base_rev, "src", "benchmarks"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        sides = {
            "base": (base / "src", base / "benchmarks/core/bench_lifecycle.py"),
            "new": (ROOT / "src", ROOT / "benchmarks/core/bench_lifecycle.py"),
        }
        results: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
        for n in range(rounds):
            for side in ("base", "new") if n % 2 == 0 else ("new", "base"):
                results[side].append(run(*sides[side]))
    print(f"bench_lifecycle: {base_rev} (base) vs working tree (new), {rounds} rounds each")
    print(f"{'':>32} {'base µs':>9} {'new µs':>9} {'new/base':>9}")
    for label in results["new"][0]:
        if label not in results["base"][0]:
            continue
        b = statistics.median(r[label] for r in results["base"])
        w = statistics.median(r[label] for r in results["new"])
        print(f"{label:>32} {b:9.2f} {w:9.2f} {w / b:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
