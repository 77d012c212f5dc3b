"""The desktop's static files are in the wheel (package data), so an installed server serves
the page: every file under src/adapters/desktop/static/ is in the built wheel, at the same
path, with the same bytes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "adapters" / "desktop" / "static"


def test_the_wheel_ships_every_desktop_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("interactions_core-*.whl")
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert len(files) > 15
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in files:
            name = "adapters/desktop/static/" + path.relative_to(STATIC).as_posix()
            assert name in names, name
            assert archive.read(name) == path.read_bytes(), name
        assert "adapters/desktop/__init__.py" in names
        assert "adapters/http/mail_html.py" in names
