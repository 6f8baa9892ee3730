"""A fake ``pynvml`` (nvidia-ml-py) for machines without an NVIDIA GPU.

Put this folder first on PYTHONPATH and point FAKE_NVML_GPUS at a JSON file:

  [{"name": "NVIDIA RTX PRO 6000", "total_mib": 97887, "free_mib": 90000,
    "processes": [{"pid": 1234, "used_mib": 512}]}, ...]

The file is read on every call, so a test can change what the GPUs have free while orch
runs. Without FAKE_NVML_GPUS, nvmlInit fails the way it does on a machine without a driver.
Only the calls orch makes exist, with the real module's names, types and units (bytes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


class NVMLError(Exception):
    """Base of NVML's errors, as in pynvml."""


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's name
    pass


class NVMLError_Uninitialized(NVMLError):  # noqa: N801 - pynvml's name
    pass


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801 - pynvml's name
    pass


_initialised = 0


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass(frozen=True)
class c_nvmlMemory_t:  # noqa: N801 - pynvml's name
    total: int
    free: int
    used: int


@dataclass(frozen=True)
class c_nvmlProcessInfo_t:  # noqa: N801 - pynvml's name
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - pynvml's name


def _gpus() -> list[dict[str, Any]]:
    if not _initialised:
        raise NVMLError_Uninitialized("Uninitialized")
    with open(os.environ["FAKE_NVML_GPUS"]) as f:  # noqa: PTH123 - keep the fake minimal
        data: list[dict[str, Any]] = json.load(f)
    return data


def _gpu(handle: _Handle) -> dict[str, Any]:
    gpus = _gpus()
    if not isinstance(handle, _Handle) or not 0 <= handle.index < len(gpus):
        raise NVMLError_InvalidArgument("Invalid Argument")
    return gpus[handle.index]


def nvmlInit() -> None:  # noqa: N802 - pynvml's name
    global _initialised
    if not os.environ.get("FAKE_NVML_GPUS"):
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    _initialised += 1


def nvmlShutdown() -> None:  # noqa: N802 - pynvml's name
    global _initialised
    if not _initialised:
        raise NVMLError_Uninitialized("Uninitialized")
    _initialised -= 1


def nvmlDeviceGetCount() -> int:  # noqa: N802 - pynvml's name
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:  # noqa: N802 - pynvml's name
    if not 0 <= index < len(_gpus()):
        raise NVMLError_InvalidArgument("Invalid Argument")
    return _Handle(index)


def nvmlDeviceGetName(handle: _Handle) -> str:  # noqa: N802 - pynvml's name
    return str(_gpu(handle)["name"])


def nvmlDeviceGetMemoryInfo(handle: _Handle) -> c_nvmlMemory_t:  # noqa: N802 - pynvml's name
    gpu = _gpu(handle)
    total = int(gpu["total_mib"]) * 2**20
    free = int(gpu["free_mib"]) * 2**20
    return c_nvmlMemory_t(total, free, total - free)


def nvmlDeviceGetComputeRunningProcesses(  # noqa: N802 - pynvml's name
    handle: _Handle,
) -> list[c_nvmlProcessInfo_t]:
    return [
        c_nvmlProcessInfo_t(int(p["pid"]), int(p["used_mib"]) * 2**20)
        for p in _gpu(handle).get("processes", [])
    ]
