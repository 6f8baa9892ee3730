"""`orch up/status/down` through real podman (runc, local image with the CPU llama-server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.conftest import CONTAINERS_CONF, OrchEnv, free_port
from tests.test_lifecycle_process import _slots_processing

GRACE_S = 10.0


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=60)


def _containers(name: str) -> list[str]:
    out = _podman("ps", "-a", "--filter", f"label=orch.profile={name}", "--format", "{{.Names}}")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def _podman_services(state: Path) -> list[int]:
    """`podman system service` processes orch started for this test's state dir."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "service" in cmd and any(str(state) in c for c in cmd):
            out.append(proc.pid)
    return out


def _runtime(image: str) -> str:
    return f'kind = "podman"\nimage = "{image}"'


def test_container_up_status_down(
    orch_env: OrchEnv, podman_image: str, tiny_gguf: Path, llama_server_binary: Path
) -> None:
    port = free_port()
    orch_env.llama_profile(
        "pc", model=tiny_gguf, binary="llama-server", port=port, runtime=_runtime(podman_image)
    )
    start = time.monotonic()
    up = orch_env.run("up", "pc")
    took = time.monotonic() - start
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"pc: ready at http://127.0.0.1:{port}" in up.stdout
    assert "warm-up 2: TTFT" in up.stdout
    print(f"\n[measured] podman up (plan+run+ready+warm-up): {took:.2f} s\n{up.stdout}")
    assert _containers("pc") == ["orch-pc"]

    status = orch_env.run("status", "pc", "--json")
    assert status.returncode == 0, status.stderr
    (data,) = json.loads(status.stdout)
    assert data["state"] == "running" and data["container"] == "orch-pc"
    assert data["figures"]["tokens_predicted_total"] >= 16

    logs = orch_env.run("logs", "pc", "-n", "400")
    assert logs.returncode == 0 and "stop processing" in logs.stdout

    start = time.monotonic()
    down = orch_env.run("down", "pc", "--grace", str(GRACE_S))
    took = time.monotonic() - start
    print(f"[measured] podman down: {took:.2f} s ({down.stdout.strip()})")
    assert down.returncode == 0, down.stderr
    assert took < GRACE_S / 2, f"down took {took:.1f} s: the engine ignored SIGTERM"
    assert _containers("pc") == []
    assert orch_env.record("pc") is None


def test_container_removed_behind_orchs_back(
    orch_env: OrchEnv, podman_image: str, tiny_gguf: Path
) -> None:
    orch_env.llama_profile(
        "pc",
        model=tiny_gguf,
        binary="llama-server",
        port=free_port(),
        runtime=_runtime(podman_image),
        warmup=0,
    )
    assert orch_env.run("up", "pc").returncode == 0
    assert _podman("rm", "-f", "orch-pc").returncode == 0
    status = orch_env.run("status", "pc")
    assert status.returncode == 6
    assert "not running" in status.stdout and "was removed outside orch" in status.stdout
    assert "Traceback" not in status.stderr
    down = orch_env.run("down", "pc")
    assert down.returncode == 0, down.stderr
    assert "was not running" in down.stdout and "removed outside orch" in down.stdout
    assert orch_env.record("pc") is None
    assert _containers("pc") == []


def test_missing_image(orch_env: OrchEnv, tiny_gguf: Path) -> None:
    orch_env.llama_profile(
        "pc",
        model=tiny_gguf,
        binary="llama-server",
        port=free_port(),
        runtime=_runtime("localhost/orch-no-such-image:0"),
    )
    up = orch_env.run("up", "pc")
    assert up.returncode == 4
    assert "image localhost/orch-no-such-image:0 is not present locally" in up.stderr
    assert _containers("pc") == []


def test_container_exits_during_load(orch_env: OrchEnv, podman_image: str, tiny_gguf: Path) -> None:
    orch_env.llama_profile(
        "pc",
        model=tiny_gguf,
        binary="llama-server",
        port=free_port(),
        runtime=_runtime(podman_image),
        extra_args=("--rope-scaling", "bogus"),
    )
    up = orch_env.run("up", "pc")
    assert up.returncode == 5, up.stdout + up.stderr
    assert "engine exited with status 1 while loading" in up.stderr
    assert "cause: unknown or invalid argument" in up.stderr
    assert _containers("pc") == []
    assert orch_env.record("pc") is None


def test_sigterm_during_warmup_removes_container(
    orch_env: OrchEnv, podman_image: str, tiny_gguf: Path
) -> None:
    port = free_port()
    orch_env.llama_profile(
        "pc", model=tiny_gguf, binary="llama-server", port=port, runtime=_runtime(podman_image)
    )
    text = (orch_env.profiles / "models" / "pc.toml").read_text()
    orch_env.write_profile(
        "pc", text.replace("requests = 2\nmax_tokens = 8", "requests = 200\nmax_tokens = 64")
    )
    proc = orch_env.popen("up", "pc")
    deadline = time.monotonic() + 60
    warming = False
    while time.monotonic() < deadline and proc.poll() is None:
        if orch_env.record("pc") and _slots_processing(port):
            warming = True
            break
        time.sleep(0.05)
    assert warming, "never saw warm-up requests"
    assert _containers("pc") == ["orch-pc"]
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - start
    print(f"\n[measured] podman: SIGTERM during warm-up → container removed, exit: {took:.2f} s")
    assert proc.returncode == 143, out + err
    assert "orch: pc: SIGTERM: stopped what was started" in err
    assert "Traceback" not in err
    assert _containers("pc") == []
    assert orch_env.record("pc") is None
    assert "listening on" in (orch_env.state / "logs" / "pc.log").read_text()  # output kept
    assert _podman_services(orch_env.state) == []
