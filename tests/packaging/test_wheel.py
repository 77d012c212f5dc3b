"""The package as a user installs it: the built wheel in a fresh venv, without the dev extras.

Proves three things: the core imports with only its three dependencies (and pulls in no web
framework, database driver, SMTP library or pytest); ``interactions_core.testing.contracts``
imports once pytest is installed (the ``testing`` extra); and the ``docs/embedding.md``
example runs as written. Dependencies come from the package index, as for a user.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "fastapi",
    "starlette",
    "uvicorn",
    "aiosmtpd",
    "aiosmtplib",
    "smtplib",
    "sqlite3",
    "websockets",
    "pytest",
    "adapters",
)


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the built wheel (and what its metadata requires)."""
    work = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        work / "dist",
        ROOT,
    )
    (wheel,) = (work / "dist").glob("interactions_core-*.whl")
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
    return python


def test_the_core_imports_with_only_its_three_dependencies(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import json, sys, importlib.metadata as md\n"
        "import interactions_core\n"
        "from interactions_core import Engine\n"
        "from interactions_core.testing import Harness\n"
        "h = Harness()\n"
        "req = md.requires('interactions-core') or []\n"
        "print(json.dumps({'modules': sorted(sys.modules),"
        " 'dists': sorted(d.metadata['Name'].lower() for d in md.distributions()),"
        " 'core': [r for r in req if 'extra ==' not in r]}))\n"
    )
    out = json.loads(run(installed, "-c", probe, cwd=tmp_path))
    loaded = {m.split(".")[0] for m in out["modules"]}
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
    names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in out["core"]}
    assert names == {"transitions", "pydantic", "email-validator"}
    assert "pytest" not in out["dists"] and "fastapi" not in out["dists"]


def test_the_contract_suites_import_once_pytest_is_installed(
    installed: Path, tmp_path: Path
) -> None:
    missing = subprocess.run(
        [str(installed), "-c", "import interactions_core.testing.contracts"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert missing.returncode != 0 and "pytest" in missing.stderr
    run(installed, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest")
    run(
        installed,
        "-c",
        "from interactions_core.testing.contracts import StoreContract",
        cwd=tmp_path,
    )


def test_the_embedding_example_runs_as_written(installed: Path, tmp_path: Path) -> None:
    page = (ROOT / "docs" / "embedding.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    script = tmp_path / "embedding_example.py"
    script.write_text(example, encoding="utf-8")
    out = run(installed, script, cwd=tmp_path)
    assert "alice /me/interactions Sent" in out
