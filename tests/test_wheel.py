"""The install works outside the checkout: a wheel built from the repo, in a fresh venv.

Issue 11, class 9. Dependencies come from pip's cache or the package index (nothing else is
reached); the venv sees nothing of the checkout (another folder, no PYTHONPATH, no ORCH_*).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.install


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 900) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``orch`` executable of a fresh venv holding only the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTHON", "VIRTUAL_ENV"))
    }
    start = time.monotonic()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(root / "dist"),
            str(REPO),
        ],
        env=env,
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("orch-*.whl")
    built = time.monotonic()
    _run([sys.executable, "-m", "venv", str(root / "venv")], env=env, cwd=root)
    _run([str(root / "venv" / "bin" / "pip"), "install", "-q", str(wheel)], env=env, cwd=root)
    print(
        f"\n[measured] wheel built in {built - start:.1f} s, installed in {time.monotonic() - built:.1f} s"
    )
    yield root / "venv" / "bin" / "orch"


@pytest.fixture
def user(tmp_path: Path) -> dict[str, str]:
    """A user's environment outside the checkout: own HOME and config folder, no ORCH_*."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "LANG": "C.UTF-8",
    }


def test_wheel_ships_templates_and_profiles(
    installed: Path, user: dict[str, str], tmp_path: Path
) -> None:
    site = _run(
        [
            str(installed.parent / "python"),
            "-c",
            "import orchestrator, sys; print(orchestrator.__file__)",
        ],
        env=user,
        cwd=tmp_path,
    )
    assert not site.startswith(str(REPO)), site
    validated = _run([str(installed), "validate"], env=user, cwd=tmp_path)
    assert "ok     models/demo" in validated
    assert validated.rstrip().endswith(" model profile(s), 0 error(s)")
    plan = _run([str(installed), "plan", "--dry-run", "demo"], env=user, cwd=tmp_path)
    assert "site-packages/orchestrator/shipped/profiles/models/demo.toml" in plan
    assert "llama-server \\\n  --host 127.0.0.1 \\\n  --port 18181 \\\n" in plan


def test_user_profiles_layer_over_the_shipped_ones(
    installed: Path, user: dict[str, str], tmp_path: Path
) -> None:
    models = Path(user["XDG_CONFIG_HOME"]) / "orch" / "profiles" / "models"
    models.mkdir(parents=True)
    # a new profile extending a shipped one, and a same-named one replacing a shipped one
    (models / "mine.toml").write_text('extends = "demo"\n\n[publish]\nport = 18999\n')
    demo = (
        (REPO / "profiles" / "models" / "demo.toml")
        .read_text()
        .replace("port = 18181", "port = 18777")
    )
    (models / "demo.toml").write_text(demo)
    mine = _run([str(installed), "plan", "--dry-run", "mine"], env=user, cwd=tmp_path)
    assert f"mine  ({models / 'mine.toml'})" in mine and "--port 18999" in mine
    replaced = _run([str(installed), "plan", "--dry-run", "demo"], env=user, cwd=tmp_path)
    assert f"demo  ({models / 'demo.toml'})" in replaced and "--port 18777" in replaced
    validated = _run([str(installed), "validate"], env=user, cwd=tmp_path)
    assert "ok     models/mine" in validated and validated.count("ok     models/demo") == 1
