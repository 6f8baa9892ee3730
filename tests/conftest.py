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

from orchestrator.hfcache import unresolved
from orchestrator.plan import Plan, build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
TEMPLATES = REPO / "templates"
GOLDEN = Path(__file__).resolve().parent / "golden"


SEED_HUB = "/mnt/data/hf/hub"
"""The lab notes' Hugging Face hub cache (seed 003: ``MO=/mnt/data/hf/hub/models--...``)."""


def shipped_plan(name: str, profiles: Path = PROFILES) -> Plan:
    """A shipped profile planned as ``plan --dry-run`` plans it on the notes' machine when the
    weights are not in its cache: from the declared hardware, the cache at SEED_HUB."""
    resolved = Catalog(profiles).load(name)
    model = resolved.profile.model
    weights = unresolved(model, SEED_HUB) if model.hf_repo else None
    return build_plan(resolved, make_environment(TEMPLATES), weights=weights)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the current output instead of comparing",
    )


ENGINE_FIXTURES = frozenset({"llama_server_binary", "podman_image", "ik_llama"})
"""Fixtures that bring up a real engine or podman: tests using them are marked ``engine``."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what `make test-fast` leaves out: real engines and podman, vLLM's parser."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
        if item.path.name == "test_vllm_args.py":
            item.add_marker(pytest.mark.vllm_parser)


@pytest.fixture(autouse=True)
def _no_user_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests never read this machine's orch.toml or profiles (~/.config/orch, /etc/orch)."""
    home = tmp_path_factory.getbasetemp() / "xdg-config-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("ORCH_CONFIG", str(home / "no-orch.toml"))


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
def ik_llama() -> Path:
    """The ik_llama.cpp CPU build: a folder with llama-server, llama-quantize, gguf-py, src/."""
    env = os.environ.get("ORCH_TEST_IK_LLAMA")
    if env:
        folder = Path(env)
    else:
        done = subprocess.run(
            [str(REPO / "scripts" / "build-ik-llama.sh")], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(
                "scripts/build-ik-llama.sh failed (it builds ik_llama.cpp from PyPI's "
                f"ik-llama-cpp-python, ~12 min on 2 cores):\n{done.stderr[-2000:]}"
            )
        folder = Path(done.stdout.strip().splitlines()[-1])
    for tool in ("llama-server", "llama-quantize"):
        if not os.access(folder / tool, os.X_OK):
            pytest.fail(f"no ik_llama.cpp {tool} in {folder} (run scripts/build-ik-llama.sh)")
    return folder


@pytest.fixture(scope="session")
def ik_ggufs(ik_llama: Path) -> dict[str, Path]:
    """The ik-moe synthetic model quantized by ik's own llama-quantize, one file per recipe.

    Kept under ~/.cache/orch/test-models/ (keyed by the ik build and the spec), since quantizing
    takes tens of seconds on 2 cores.
    """
    from orchestrator.synthetic import IK_RECIPES, SPECS, quantize_ik, write_gguf

    folder = ik_model_folder(ik_llama)
    f16 = folder / "ik-moe-f16.gguf"
    if not f16.exists():
        write_gguf(SPECS["ik-moe"], f16)
    out = {}
    for recipe in IK_RECIPES:
        path = folder / f"ik-moe-{recipe}.gguf"
        if not path.exists():
            try:
                quantize_ik(ik_llama / "llama-quantize", f16, path, recipe)
            except RuntimeError as exc:
                pytest.fail(str(exc))
        out[recipe] = path
    return out


@pytest.fixture(scope="session")
def ik_podman_image(ik_llama: Path) -> str:
    """A local podman image of ik's llama-server (scripts/build-image.sh; seconds, cached)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install -y podman runc)")
    image = f"localhost/orch-ik-llama-server:{ik_llama.name.rsplit('-', 1)[0]}"
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh"), image, str(ik_llama / "llama-server")],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/build-image.sh (ik) failed:\n{done.stderr[-2000:]}")
    return image


def ik_model_folder(ik_llama: Path) -> Path:
    """Where quantized test models of this ik build and the ik-moe spec are kept."""
    import hashlib

    from orchestrator.synthetic import IK_RECIPES, SPECS, vocab

    spec = SPECS["ik-moe"]
    made_of = (spec, IK_RECIPES, vocab(spec.n_vocab, spec.byte_tokens))
    key = hashlib.sha256(repr(made_of).encode()).hexdigest()[:10]
    folder = Path.home() / ".cache" / "orch" / "test-models" / f"ik-{ik_llama.name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
