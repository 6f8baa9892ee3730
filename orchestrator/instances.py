"""Running instances: preflight, launch, attach, and live figures. No printing here."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from podman import PodmanClient

from orchestrator.app import live_problems
from orchestrator.errors import PreflightError
from orchestrator.health import get_json, request
from orchestrator.plan import Plan, container_name
from orchestrator.probe import probe_host
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import LlamaEngine, ModelProfile, PodmanRuntime, VllmEngine
from orchestrator.runtime import Handle
from orchestrator.runtime import podman as podman_rt
from orchestrator.runtime import process as process_rt
from orchestrator.settings import Settings
from orchestrator.state import Record

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


class Runtimes:
    """Opens the podman API connection only when a podman instance is touched."""

    def __init__(self, settings: Settings, stack: contextlib.ExitStack) -> None:
        """Connections opened here close with ``stack``."""
        self.settings = settings
        self.stack = stack
        self._client: PodmanClient | None = None

    def client(self) -> PodmanClient:
        """The podman-py client (host socket or a private service)."""
        if self._client is None:
            self._client = self.stack.enter_context(
                podman_rt.connect(self.settings.podman_binary, self.settings.state_dir)
            )
        return self._client

    def attach(self, record: Record) -> Handle:
        """A handle for what the record says is running (it may have stopped since)."""
        if record.runtime == "podman":
            return podman_rt.ContainerHandle(
                self.client(), record.container_id or "", record.container_name or record.name
            )
        return process_rt.ProcessHandle(
            record.pid or 0, Path(record.log_path), create_time=record.pid_create_time
        )


def gpu_indices(plan: Plan) -> tuple[int, ...]:
    """GPUs the plan puts anything on."""
    return tuple(
        sorted(int(d.removeprefix("CUDA")) for d in plan.memory.devices if d.startswith("CUDA"))
    )


def api_key(profile: ModelProfile, environ: Mapping[str, str]) -> str | None:
    """The API key the engine will demand, read the way the engine reads it."""
    if profile.secrets.api_key_env:
        return environ.get(profile.secrets.api_key_env)
    if profile.secrets.api_key_file:
        with contextlib.suppress(OSError):
            return Path(profile.secrets.api_key_file).expanduser().read_text().strip()
    return None


def model_name(plan: Plan) -> str:
    """The ``model`` field requests send (vLLM checks it; llama-server ignores it)."""
    engine = plan.profile.engine
    if isinstance(engine, VllmEngine):
        return engine.served_model_name or plan.profile.model.repo or plan.profile.model.path
    return plan.name


def engine_env(plan: Plan, environ: Mapping[str, str]) -> dict[str, str]:
    """Orch's environment + the plan's env + the secret variables the engine reads."""
    env = dict(environ)
    env.update(plan.env)
    source = plan.profile.secrets.api_key_env
    for name in plan.secret_env:
        if source and source in environ:
            env[name] = environ[source]
    return env


def supported_flags(binary: str) -> set[str]:
    """Flags ``BINARY --help`` mentions."""
    try:
        done = subprocess.run(
            [binary, "--help"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PreflightError(f"{binary} --help failed: {exc}") from None
    text = (done.stdout + done.stderr).decode(errors="replace")
    return set(_FLAG.findall(text))


def preflight(
    plan: Plan, resolved: ResolvedProfile, settings: Settings, *, check_memory: bool = True
) -> list[str]:
    """Everything checkable before launch; raises PreflightError, returns notes.

    ``check_memory=False`` skips the free RAM/VRAM check (files and port are still checked).
    """
    profile = plan.profile
    engine = profile.engine
    notes: list[str] = []
    problems: list[str] = []
    if profile.numactl is not None and shutil.which("numactl") is None:
        problems.append("numactl is not installed (the profile sets [numactl])")
    if isinstance(profile.runtime, PodmanRuntime):
        if shutil.which(settings.podman_binary) is None:
            raise PreflightError(f"{plan.name}: {settings.podman_binary} is not installed")
        if not podman_rt.image_exists(settings.podman_binary, profile.runtime.image):
            problems.append(
                f"image {profile.runtime.image} is not present locally "
                "(build it, e.g. scripts/build-image.sh, or podman pull it)"
            )
        notes.append("flag check skipped for podman (it would need a container start)")
    else:
        binary = shutil.which(engine.binary)
        if binary is None:
            problems.append(f"engine binary {engine.binary!r} not found (engine.binary)")
        elif isinstance(engine, LlamaEngine):
            supported = supported_flags(binary)
            unknown = [f for f in plan.engine_flags if f not in supported]
            if unknown:
                problems.append(
                    f"{binary} does not support {', '.join(unknown)} (per its --help); "
                    "check engine.version"
                )
        else:
            notes.append("flag check skipped for vLLM (its --help imports torch)")
    secrets = profile.secrets
    if secrets.api_key_env and secrets.api_key_env not in os.environ:
        problems.append(f"secrets.api_key_env: ${secrets.api_key_env} is not set")
    if secrets.api_key_file and not Path(secrets.api_key_file).expanduser().is_file():
        problems.append(f"secrets.api_key_file: {secrets.api_key_file} does not exist")
    for problem in live_problems(plan, resolved, probe_host()):
        device = problem.split(":", 1)[0]
        if not check_memory and (device == "CPU" or device.startswith("CUDA")):
            notes.append(f"memory check skipped: {problem}")
        else:
            problems.append(problem)
    if problems:
        raise PreflightError(f"{plan.name}: cannot start here:\n  " + "\n  ".join(problems))
    return notes


def launch(
    plan: Plan, settings: Settings, runtimes: Runtimes, log_path: Path, header: str
) -> Handle:
    """Start the plan's argv in its runtime."""
    env = engine_env(plan, os.environ)
    if isinstance(plan.profile.runtime, PodmanRuntime):
        return podman_rt.launch(
            runtimes.client(), plan.argv, env, container_name(plan.name), log_path
        )
    return process_rt.launch(plan.argv, env, log_path, header=header)


def stop_leftovers(runtimes: Runtimes, plan: Plan, grace_s: float) -> None:
    """Remove containers labelled for this profile (a launch interrupted mid-``podman run``)."""
    if isinstance(plan.profile.runtime, PodmanRuntime):
        for handle in podman_rt.find(runtimes.client(), plan.name):
            handle.stop(grace_s)


@dataclass(frozen=True)
class MemoryInUse:
    """Measured memory of an engine's processes."""

    rss_bytes: int
    gpu_bytes: dict[int, int]
    gpu_note: str


def memory_in_use(pids: list[int]) -> MemoryInUse:
    """RSS via psutil; per-GPU memory via pynvml when a driver is there."""
    rss = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            rss += psutil.Process(pid).memory_info().rss
    gpu: dict[int, int] = {}
    note = ""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no pynvml, no driver: CPU only
        return MemoryInUse(rss, gpu, f"no GPU figures ({type(exc).__name__})")
    try:
        wanted = set(pids)
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in wanted and proc.usedGpuMemory:
                    gpu[index] = gpu.get(index, 0) + int(proc.usedGpuMemory)
    finally:
        pynvml.nvmlShutdown()
    return MemoryInUse(rss, gpu, note)


def live_figures(endpoint: str, api_key: str | None = None) -> dict[str, Any]:
    """Counters from ``/metrics`` and slot use from ``/slots`` (llama-server), when served."""
    out: dict[str, Any] = {}
    try:
        status, data = request(endpoint, "/metrics", api_key=api_key, timeout=1.0)
    except OSError:
        status, data = 0, b""
    if status == 200:
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("#") or " " not in line:
                continue
            key, _, value = line.rpartition(" ")
            key = key.split("{", 1)[0]
            for prefix in ("llamacpp:", "vllm:"):
                if key.startswith(prefix):
                    with contextlib.suppress(ValueError):
                        out[key.removeprefix(prefix)] = float(value)
    slots = get_json(endpoint, "/slots", api_key=api_key, timeout=1.0)
    if isinstance(slots, list):
        out["slots_total"] = len(slots)
        out["slots_busy"] = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing"))
    return out
