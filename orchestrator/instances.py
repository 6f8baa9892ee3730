"""Running instances: preflight, launch, attach, and live figures. No printing here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from podman import PodmanClient

from orchestrator.app import file_problems, resource_problems
from orchestrator.engines import adapter_for
from orchestrator.errors import PreflightError
from orchestrator.health import get_json, request
from orchestrator.plan import Plan, container_name
from orchestrator.probe import probe_host
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import ModelProfile, PodmanRuntime
from orchestrator.runtime import Handle, Unverified
from orchestrator.runtime import podman as podman_rt
from orchestrator.runtime import process as process_rt
from orchestrator.settings import Settings
from orchestrator.state import Record, StateStore

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*(?:\.[\w-]+)*)")
"""A flag in ``--help`` text; inner dots count (``--fim-qwen-1.5b-default``), a final one not."""

FLAG_CACHE_VERSION = 1
"""Bump when the ``--help`` parsing changes, so older cached flag sets are re-read."""


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
        """A handle for what the record says is running (it may have stopped since).

        Only what is provably the instance orch started is ever signalled or trusted as
        running: a container with this ID and orch's labels for this profile and plan, a
        process with this pid and start time leading its own group. Anything else is
        :class:`Unverified`.
        """
        log_path = StateStore(self.settings.state_dir).log_path(record.name)
        if record.runtime == "podman":
            return podman_rt.ContainerHandle(
                self.client(),
                record.container_id or "",
                record.container_name or container_name(record.name),
                labels={podman_rt.LABEL: record.name, podman_rt.PLAN_LABEL: record.plan_hash},
            )
        if record.pid is None or record.pid_create_time is None:
            return Unverified(f"pid {record.pid}", "its record has no process start time")
        return process_rt.ProcessHandle(record.pid, log_path, create_time=record.pid_create_time)


def gpu_indices(plan: Plan) -> tuple[int, ...]:
    """GPUs the plan puts anything on."""
    return tuple(
        sorted(int(d.removeprefix("CUDA")) for d in plan.memory.devices if d.startswith("CUDA"))
    )


def api_key(profile: ModelProfile, environ: Mapping[str, str]) -> str | None:
    """The API key the engine will demand, read the way the engine reads it.

    From ``api_key_file``: its first line that is neither blank nor a ``#`` comment
    (llama-server accepts each such line as a key; orch's own requests send the first, and
    vLLM, which has no key-file flag, gets it in ``VLLM_API_KEY``).
    """
    if profile.secrets.api_key_env:
        return environ.get(profile.secrets.api_key_env) or None
    if profile.secrets.api_key_file:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return _first_key(Path(profile.secrets.api_key_file).expanduser().read_bytes().decode())
    return None


def _first_key(text: str) -> str | None:
    """The first line llama-server takes as a key: not empty, not a ``#`` comment.

    Lines are not stripped: the engines compare keys byte for byte (``secret_problems``
    refuses files whose keys carry spaces or a CR, which no client would send).
    """
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            return line
    return None


def secret_problems(profile: ModelProfile, environ: Mapping[str, str]) -> list[str]:
    """Why the profile's API key cannot be handed to the engine (empty when it can).

    An empty variable or a file without a key line is refused: llama-server would start
    without authentication, not with the key the profile asks for.
    """
    secrets = profile.secrets
    if secrets.api_key_env:
        value = environ.get(secrets.api_key_env)
        if value is None:
            return [f"secrets.api_key_env: ${secrets.api_key_env} is not set"]
        if not value.strip():
            return [
                f"secrets.api_key_env: ${secrets.api_key_env} is empty "
                "(the engine would start without authentication)"
            ]
    if secrets.api_key_file:
        path = Path(secrets.api_key_file).expanduser()
        try:
            text = path.read_bytes().decode()  # not read_text: keep CRs as the engine will
        except FileNotFoundError:
            return [f"secrets.api_key_file: {secrets.api_key_file} does not exist"]
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return [f"secrets.api_key_file: cannot read {secrets.api_key_file}: {reason}"]
        if _first_key(text) is None:
            return [
                f"secrets.api_key_file: {secrets.api_key_file} holds no key (only blank or # "
                "lines; the engine would start without authentication)"
            ]
        lines = [line for line in text.split("\n") if line]
        if any(line != line.strip() for line in lines):
            return [
                f"secrets.api_key_file: {secrets.api_key_file} has a line with leading or "
                "trailing whitespace (or CRLF endings); the engine would take it as part of the key"
            ]
        adapter = adapter_for(profile.engine)
        if adapter.key_file_comments_are_keys and any(ln.startswith("#") for ln in lines):
            return [
                f"secrets.api_key_file: {secrets.api_key_file} has a # line, which "
                f"{adapter.kind} accepts as a key; remove it"
            ]
    return []


def model_name(plan: Plan) -> str:
    """The ``model`` field requests send (vLLM checks it; llama-server ignores it)."""
    return adapter_for(plan.profile.engine).model_name(plan.profile, plan.name)


def served_name(plan: Plan) -> str | None:
    """The name ``/v1/models`` must list before the engine counts as ready (None: any)."""
    return adapter_for(plan.profile.engine).served_name(plan.profile, plan.name)


def engine_env(plan: Plan, environ: Mapping[str, str]) -> dict[str, str]:
    """Orch's environment + the plan's env + the secret variables the engine reads."""
    env = dict(environ)
    env.update(plan.env)
    key = api_key(plan.profile, environ) if plan.secret_env else None
    for name in plan.secret_env:
        if key:
            env[name] = key
    return env


def supported_flags(binary: str) -> frozenset[str]:
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
    return frozenset(_FLAG.findall(text))


def flag_cache_path(settings: Settings, image_id: str) -> Path:
    """Where the flag set of the image with this ID is cached."""
    return StateStore(settings.state_dir).cache_path("engine-flags", image_id.replace(":", "-"))


def image_flags(settings: Settings, image: podman_rt.ImageInfo) -> tuple[frozenset[str], bool]:
    """Flags the image's entrypoint lists in ``--help``, and whether they came from the cache.

    The first call per image ID runs a throwaway container and caches the set under the state
    dir; a rebuilt image has a new ID and is read afresh. A cache that cannot be written only
    costs the container start next time.
    """
    path = flag_cache_path(settings, image.id)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_text())
        if data["version"] == FLAG_CACHE_VERSION and data["image_id"] == image.id:
            return frozenset(str(f) for f in data["flags"]), True
    flags = frozenset(_FLAG.findall(podman_rt.engine_help(settings.podman_binary, image)))
    record = {
        "version": FLAG_CACHE_VERSION,
        "image_id": image.id,
        "entrypoint": list(image.entrypoint),
        "flags": sorted(flags),
    }
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".flags.", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(record, out, indent=1)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return flags, False


def preflight(
    plan: Plan,
    resolved: ResolvedProfile,
    settings: Settings,
    *,
    check_memory: bool = True,
    check_resources: bool = True,
) -> list[str]:
    """Everything checkable before launch; raises PreflightError, returns notes.

    ``check_memory=False`` skips the free RAM/VRAM check (files and port are still checked).
    ``check_resources=False`` skips the port and memory, which instances about to be stopped
    may hold: ``up --replace`` checks everything else before it stops anything.
    """
    profile = plan.profile
    engine = profile.engine
    adapter = adapter_for(engine)
    notes: list[str] = []
    problems: list[str] = []
    if profile.numactl is not None and shutil.which("numactl") is None:
        problems.append("numactl is not installed (the profile sets [numactl])")
    if isinstance(profile.runtime, PodmanRuntime):
        if shutil.which(settings.podman_binary) is None:
            raise PreflightError(f"{plan.name}: {settings.podman_binary} is not installed")
        image = profile.runtime.image
        info = podman_rt.inspect_image(settings.podman_binary, image)
        if info is None:
            problems.append(
                f"image {image} is not present locally "
                "(build it, e.g. scripts/build-image.sh, or podman pull it)"
            )
        elif not adapter.help_lists_flags:
            notes.append(f"flag check skipped for {adapter.label} (its --help imports torch)")
        elif not info.entrypoint:
            problems.append(
                f"image {image} has no entrypoint; orch passes the engine arguments to it, "
                "so it must be llama-server"
            )
        else:
            start = time.perf_counter()
            try:
                supported, cached = image_flags(settings, info)
            except PreflightError as exc:
                problems.append(f"cannot list the flags of image {image}: {exc}")
                supported, cached = frozenset(plan.engine_flags), True
            unknown = adapter.unconfirmed_flags(plan.engine_flags, supported)
            if unknown:
                problems.append(
                    f"image {image} ({' '.join(info.entrypoint)}) does not support "
                    f"{', '.join(unknown)} (per its --help); check engine.version and "
                    "runtime.image"
                )
            elif not cached:
                notes.append(
                    f"engine flags read from {image} in {time.perf_counter() - start:.2f} s "
                    f"(podman run --help), cached for image {info.id[:12]}"
                )
    else:
        binary = shutil.which(engine.binary)
        if binary is None:
            problems.append(f"engine binary {engine.binary!r} not found (engine.binary)")
        elif adapter.help_lists_flags:
            supported = supported_flags(binary)
            unknown = adapter.unconfirmed_flags(plan.engine_flags, supported)
            if unknown:
                problems.append(
                    f"{binary} does not support {', '.join(unknown)} (per its --help); "
                    "check engine.version"
                )
        else:
            notes.append(f"flag check skipped for {adapter.label} (its --help imports torch)")
    problems.extend(secret_problems(profile, os.environ))
    problems.extend(file_problems(plan))
    ignored: list[str] = []
    found = resource_problems(plan, resolved, probe_host()) if check_resources else []
    for problem in found:
        device = problem.split(":", 1)[0]
        if not check_memory and (device == "CPU" or device.startswith("CUDA")):
            ignored.append(f"ignored: {problem}")
        else:
            problems.append(problem)
    if not check_memory and check_resources:
        notes.append("free RAM/VRAM check skipped (--skip-memory-check)")
        notes.extend(ignored)
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
