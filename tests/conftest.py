"""Shared pytest configuration: the golden switch and paths to the shipped tree."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
TEMPLATES = REPO / "templates"
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


# ---------------------------------------------------------------- lifecycle fixtures
# Real components: the CPU llama-server, tiny synthetic GGUFs, podman. A missing component
# fails the tests that need it, with a message saying how to get it; nothing is skipped.

FAKES = Path(__file__).resolve().parent / "fakes"
CONTAINERS_CONF = Path(__file__).resolve().parent / "podman.containers.conf"
TEST_IMAGE = "localhost/orch-llama-server:11434.0.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    env = os.environ.get("ORCH_TEST_LLAMA_SERVER")
    if env:
        path = Path(env)
    else:
        done = subprocess.run(
            [str(REPO / "scripts" / "build-llama-server.sh")], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/build-llama-server.sh failed:\n{done.stderr[-2000:]}")
        path = Path(done.stdout.strip().splitlines()[-1])
    if not os.access(path, os.X_OK):
        pytest.fail(f"no llama-server binary at {path} (set ORCH_TEST_LLAMA_SERVER)")
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from orchestrator.synthetic import SPECS, write_gguf

    return write_gguf(SPECS["tiny-dense"], tmp_path_factory.mktemp("models") / "tiny-dense.gguf")


@pytest.fixture(scope="session")
def podman_image() -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install -y podman runc)")
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh"), TEST_IMAGE],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/build-image.sh failed:\n{done.stderr[-2000:]}")
    return TEST_IMAGE


LLAMA_PROFILE = """\
description = "lifecycle test"
architecture = "synthetic-tiny-dense"
hardware = "small-cpu"

[model]
path = "{model}"
quant = "F16"

[engine]
kind = "llama.cpp"
binary = "{binary}"
ctx = 512
parallel = 1
threads = 2
batch = 128
ubatch = 128
gpu_layers = 0
cache_ram_mib = 0
extra_args = {extra_args}

[runtime]
{runtime}

[publish]
port = {port}

[warmup]
requests = {warmup}
max_tokens = 8
"""


@dataclass
class OrchEnv:
    """A private profiles tree and state dir, and a way to run `orch` against them."""

    root: Path
    profiles: Path
    state: Path
    env: dict[str, str]
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def write_profile(self, name: str, text: str) -> Path:
        path = self.profiles / "models" / f"{name}.toml"
        path.write_text(text)
        return path

    def llama_profile(
        self,
        name: str,
        *,
        model: Path,
        binary: Path | str,
        port: int,
        runtime: str = 'kind = "process"',
        warmup: int = 2,
        extra_args: tuple[str, ...] = (),
    ) -> Path:
        extra = "[" + ", ".join(f'"{a}"' for a in extra_args) + "]"
        return self.write_profile(
            name,
            LLAMA_PROFILE.format(
                model=model,
                binary=binary,
                port=port,
                runtime=runtime,
                warmup=warmup,
                extra_args=extra,
            ),
        )

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=self.root,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.root,
        )
        self.started.append(proc)
        return proc

    def record(self, name: str) -> dict[str, object] | None:
        path = self.state / "run" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def orch_env(tmp_path: Path) -> Iterator[OrchEnv]:
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES, profiles)
    state = tmp_path / "state"
    env = {
        **os.environ,
        "ORCH_PROFILES_DIR": str(profiles),
        "ORCH_TEMPLATES_DIR": str(TEMPLATES),
        "ORCH_STATE_DIR": str(state),
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "ORCH_CONFIG": str(tmp_path / "no-orch.toml"),
    }
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    orch = OrchEnv(tmp_path, profiles, state, env)
    yield orch
    for proc in orch.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Whatever a failed test left running: stop it so the next tests start clean.
    if (state / "run").is_dir() and any((state / "run").glob("*.json")):
        orch.run("down", "--all", "--grace", "2", timeout=60)


# ---------------------------------------------------------------- gateway fixtures


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed (apt-get install -y chromium, or scripts/install-system-deps.sh)"
        )
    return path


@pytest.fixture(scope="session")
def throttle_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/throttle/throttle_read.c built for LD_PRELOAD: slows an engine's weight reads."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail(
            "no C compiler to build tests/throttle/throttle_read.c (apt-get install -y gcc)"
        )
    out = tmp_path_factory.mktemp("throttle") / "throttle_read.so"
    source = Path(__file__).resolve().parent / "throttle" / "throttle_read.c"
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(source), "-ldl"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"building {source} failed:\n{done.stderr[-2000:]}")
    return out
