"""load_mode = "mlock" in podman: orch renders what locking needs, and the weights are locked.

The real test runs the real llama-server image under real podman with a model larger than
the 8 MiB RLIMIT_MEMLOCK a container gets here, then reads ``VmLck`` of the engine process.
This machine's podman cannot raise a container's limit above the host's, so the test points
ORCH_PODMAN_BINARY at ``tests/podman-sandbox`` (a CI shim, not product code): it lowers the
rendered ``memlock=-1:-1`` to the host's hard limit, and the lock still succeeds through the
CAP_IPC_LOCK orch renders beside it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import psutil
import pytest

from orchestrator.memory.breakdown import MIB
from orchestrator.synthetic import SyntheticSpec, write_gguf
from tests.conftest import CONTAINERS_CONF, REPO, OrchEnv, free_port

SHIM = REPO / "tests" / "podman-sandbox"
LOCKED_SPEC = SyntheticSpec(
    name="synthetic-lockable-llama",
    arch="llama",
    n_embd=512,
    n_layer=4,
    n_head=8,
    n_head_kv=4,
    head_dim=64,
    n_ff=2048,
    ctx_train=4096,
)
"""A dense llama of about 34 MiB: four times the 8 MiB a container may lock by default."""

PROFILE = """\
description = "test: weights locked in RAM inside a container"
architecture = "synthetic-tiny-dense"
hardware = "small-cpu"

[model]
path = "{model}"
quant = "F16"

[engine]
kind = "llama.cpp"
ctx = 512
parallel = 1
threads = 2
batch = 128
ubatch = 128
gpu_layers = 0
cache_ram_mib = 0
load_mode = "{load_mode}"

[runtime]
kind = "podman"
image = "{image}"

[publish]
port = {port}

[warmup]
requests = 1
max_tokens = 4
"""


def _profile(orch_env: OrchEnv, name: str, model: Path, image: str, load_mode: str) -> int:
    port = free_port()
    orch_env.write_profile(
        name, PROFILE.format(model=model, image=image, port=port, load_mode=load_mode)
    )
    return port


@pytest.mark.parametrize(
    ("load_mode", "rendered"),
    [
        ("mlock", ["--cap-add=IPC_LOCK", "--ulimit", "memlock=-1:-1"]),
        ("mmap", []),
        ("no-mmap", []),
    ],
)
def test_mlock_renders_a_memlock_limit_and_the_capability(
    orch_env: OrchEnv, tmp_path: Path, load_mode: str, rendered: list[str]
) -> None:
    _profile(orch_env, "lk", tmp_path / "m.gguf", "localhost/x", load_mode)
    done = orch_env.run("plan", "--dry-run", "--json", "lk")
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)["argv"]
    outer = argv[: argv.index("localhost/x")]
    chosen = [
        a for a in outer if a in ("--cap-add=IPC_LOCK", "--ulimit") or a.startswith("memlock=")
    ]
    assert chosen == rendered


def _engine_pid(container: str) -> int:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        ["podman", "inspect", container, "--format", "{{.State.Pid}}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    init = psutil.Process(int(done.stdout))  # catatonit (--init); the engine is its child
    engines = [p for p in init.children() if "llama-server" in p.name()]
    assert len(engines) == 1, [p.name() for p in init.children()]
    return engines[0].pid


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", text, re.M)
    assert match, text
    return int(match.group(1))


def test_weights_are_locked_in_a_real_container(
    orch_env: OrchEnv, tmp_path: Path, podman_image: str
) -> None:
    model = write_gguf(LOCKED_SPEC, tmp_path / "models" / "lockable.gguf")
    size = model.stat().st_size
    assert size > 4 * 8 * MIB  # well past the 8 MiB limit a container gets here
    orch_env.env["ORCH_PODMAN_BINARY"] = str(SHIM)
    port = _profile(orch_env, "locked", model, podman_image, "mlock")
    up = orch_env.run("up", "locked", timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"locked: ready at http://127.0.0.1:{port}" in up.stdout
        pid = _engine_pid("orch-locked")
        locked = _status_kib(pid, "VmLck") * 1024
        limits = Path(f"/proc/{pid}/limits").read_text()
        memlock = re.search(r"^Max locked memory\s+(\d+|unlimited)", limits, re.M)
        assert memlock, limits
        print(
            f"\n[measured] VmLck {locked / MIB:.1f} MiB, model file {size / MIB:.1f} MiB, "
            f"RLIMIT_MEMLOCK {memlock.group(1)}"
        )
        # the whole mapped file is locked (llama.cpp mlocks the mapping), beyond the limit
        assert locked >= size - 64 * 1024
        assert locked <= size + 4 * MIB
        if memlock.group(1) != "unlimited":
            assert locked > int(memlock.group(1))
        logs = orch_env.run("logs", "locked", "-n", "400")
        assert "failed to mlock" not in logs.stdout + logs.stderr
    finally:
        down = orch_env.run("down", "locked", "--grace", "5")
    assert down.returncode == 0, down.stderr


def test_without_mlock_nothing_is_locked(
    orch_env: OrchEnv, tmp_path: Path, podman_image: str
) -> None:
    """The control: the same model mmapped without mlock locks nothing."""
    model = write_gguf(LOCKED_SPEC, tmp_path / "models" / "lockable.gguf")
    orch_env.env["ORCH_PODMAN_BINARY"] = str(SHIM)
    _profile(orch_env, "unlocked", model, podman_image, "mmap")
    up = orch_env.run("up", "unlocked", timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert _status_kib(_engine_pid("orch-unlocked"), "VmLck") == 0
    finally:
        down = orch_env.run("down", "unlocked", "--grace", "5")
    assert down.returncode == 0, down.stderr
