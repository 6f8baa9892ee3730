"""Live host facts: RAM (psutil), GPUs (pynvml), ports, files. Effects only, no decisions."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class GpuState:
    """One GPU as NVML sees it now."""

    index: int
    name: str
    total_mib: int
    free_mib: int


@dataclass(frozen=True)
class HostState:
    """What the machine has free right now."""

    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GpuState, ...]
    gpu_note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def probe_gpus() -> tuple[tuple[GpuState, ...], str]:
    """GPUs via NVML; no driver or no pynvml → empty with a note, never an exception."""
    try:
        import pynvml
    except ImportError:
        return (), "pynvml is not installed: no GPU facts"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return (), f"no NVIDIA driver ({type(exc).__name__}): CPU only"
    try:
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                GpuState(
                    index,
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(info.total) // (1024 * 1024),
                    int(info.free) // (1024 * 1024),
                )
            )
        return tuple(out), ""
    finally:
        pynvml.nvmlShutdown()


def probe_host() -> HostState:
    """RAM from psutil and GPUs from NVML."""
    mem = psutil.virtual_memory()
    gpus, note = probe_gpus()
    return HostState(int(mem.total), int(mem.available), gpus, note)


def free_memory(devices: Iterable[str]) -> dict[str, int | None]:
    """Bytes free now on each device: available RAM for ``CPU``, NVML's free for ``CUDAn``.

    A GPU that NVML does not show (no driver here) has 0 bytes free, as it has for the
    preflight check. NVML is asked only when a GPU is among ``devices``.
    """
    wanted = set(devices)
    free: dict[str, int | None] = {}
    if "CPU" in wanted:
        free["CPU"] = int(psutil.virtual_memory().available)
    gpus = [d for d in wanted if d.startswith("CUDA")]
    if gpus:
        seen, _ = probe_gpus()
        by_name = {f"CUDA{g.index}": g.free_mib * 1024 * 1024 for g in seen}
        for device in gpus:
            free[device] = by_name.get(device, 0)
    return free


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def missing_files(paths: list[Path]) -> list[Path]:
    """The paths that do not exist."""
    return [p for p in paths if not p.exists()]
