"""Memory sizing of one resolved profile: tensor table, per-device estimate, budgets. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engines import adapter_for, llama_adapter
from orchestrator.errors import ProfileError
from orchestrator.memory.breakdown import GIB, MIB, MemoryEstimate
from orchestrator.memory.llama import CPU, LlamaConfig
from orchestrator.memory.tensors import RECIPES, GgufHeader, Tensor, tensors_from_architecture
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import HardwareProfile, ModelProfile, PodmanRuntime
from orchestrator.search import largest, smallest, with_engine

__all__ = [
    "DeviceBudget",
    "budgets",
    "estimate",
    "gpus_for",
    "largest",
    "llama_config_for",
    "model_tensors",
    "smallest",
    "with_engine",
]


@dataclass(frozen=True)
class DeviceBudget:
    """Need against capacity on one device."""

    device: str
    need: int
    capacity: int

    @property
    def fits(self) -> bool:
        """Whether the need is within capacity."""
        return self.need <= self.capacity

    @property
    def over_by(self) -> int:
        """Bytes over capacity (0 if it fits)."""
        return max(self.need - self.capacity, 0)


def model_tensors(resolved: ResolvedProfile, header: GgufHeader | None) -> tuple[list[Tensor], str]:
    """The tensor table: the GGUF header's when the file is read, else built from facts."""
    if header is not None:
        return list(header.tensors), f"GGUF header ({len(header.files)} file(s))"
    quant = resolved.profile.model.quant.upper()
    if quant not in RECIPES:
        raise ProfileError(
            resolved.source,
            [f"model.quant: {resolved.profile.model.quant!r} is not one of {', '.join(RECIPES)}"],
        )
    tensors = tensors_from_architecture(
        resolved.architecture, quant, resolved.profile.model.tensor_types
    )
    return tensors, f"architecture facts + {quant} recipe (file not read)"


def gpus_for(profile: ModelProfile, hardware: HardwareProfile) -> list[tuple[str, int]]:
    """``(name, vram_mib)`` of the GPUs this profile may use."""
    allowed = profile.gpus
    if allowed == "any":  # callers choose one GPU (App.gpu_choices); alone, the first
        allowed = tuple(sorted(g.index for g in hardware.gpus))[:1]
    runtime = profile.runtime
    if isinstance(runtime, PodmanRuntime) and not any(
        "gpu" in d or "nvidia" in d for d in runtime.devices
    ):
        return []  # a container without a GPU device sees no GPU
    return [
        (f"CUDA{g.index}", g.vram_mib)
        for g in sorted(hardware.gpus, key=lambda g: g.index)
        if allowed is None or g.index in allowed
    ]


def estimate(
    resolved: ResolvedProfile, header: GgufHeader | None
) -> tuple[MemoryEstimate, str, int]:
    """Memory per device, where the tensor sizes came from, and the weights' total bytes."""
    tensors, source = model_tensors(resolved, header)
    model_bytes = sum(t.nbytes for t in tensors)
    gpus = gpus_for(resolved.profile, resolved.hardware)
    memory = adapter_for(resolved.profile.engine).estimate(resolved, tensors, gpus)
    return memory, source, model_bytes


def llama_config_for(resolved: ResolvedProfile) -> LlamaConfig:
    """The memory model's view of a resolved llama.cpp / ik_llama.cpp profile."""
    adapter = llama_adapter(resolved.profile.engine)
    return adapter.config_for(resolved, gpus_for(resolved.profile, resolved.hardware))


def budgets(memory: MemoryEstimate, hardware: HardwareProfile) -> tuple[DeviceBudget, ...]:
    """Compare each device's need with what the hardware profile offers."""
    out = []
    for device, need in memory.devices.items():
        if device == CPU:
            capacity = int((hardware.memory.ram_gib - hardware.budget.ram_headroom_gib) * GIB)
        else:
            gpu = hardware.gpu(int(device.removeprefix("CUDA")))
            vram = gpu.vram_mib if gpu else 0
            capacity = (vram - hardware.budget.gpu_headroom_mib) * MIB
        out.append(DeviceBudget(device, need.total, capacity))
    return tuple(out)
