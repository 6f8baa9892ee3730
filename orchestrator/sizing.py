"""Memory sizing of one resolved profile: tensor table, per-device estimate, budgets. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.engines import EngineCaps, engine_caps
from orchestrator.errors import ProfileError
from orchestrator.memory.breakdown import GIB, MIB, MemoryEstimate
from orchestrator.memory.llama import (
    CPU,
    EXPERT_REGEX,
    REPACK_AVX2,
    LlamaConfig,
    estimate_llama,
    n_cpu_moe_rules,
)
from orchestrator.memory.tensors import RECIPES, GgufHeader, Tensor, tensors_from_architecture
from orchestrator.memory.vllm import VllmConfig, estimate_vllm
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import (
    HardwareProfile,
    LlamaEngine,
    ModelProfile,
    PodmanRuntime,
    VllmEngine,
)


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


def stays_off_gpu(engine: LlamaEngine) -> bool:
    """Whether a llama-server profile places nothing on a GPU (``gpu_layers = 0``, no rule to one).

    A CUDA build would still open the first GPU it sees for such a command line (a CUDA
    context, and a compute buffer for the large batches it offloads), so orch renders what
    keeps it off the GPUs instead (``plan.py``) and sizes it as a CPU-only process.
    """
    return engine.gpu_layers == 0 and all(r.device == "CPU" for r in engine.override_tensors)


def engine_gpus(profile: ModelProfile, hardware: HardwareProfile) -> list[tuple[str, int]]:
    """``(name, vram_mib)`` of the GPUs the engine will open: none when it stays off them."""
    engine = profile.engine
    if isinstance(engine, LlamaEngine) and stays_off_gpu(engine):
        return []
    return gpus_for(profile, hardware)


def llama_config(
    engine: LlamaEngine,
    caps: EngineCaps,
    hardware: HardwareProfile,
    gpus: list[tuple[str, int]],
    moe_layers: list[int],
) -> LlamaConfig:
    """The memory model's view of a llama-server profile."""
    overrides: list[tuple[str, str]] = [(r.pattern, r.device) for r in engine.override_tensors]
    if engine.cpu_moe:
        overrides.append((EXPERT_REGEX, CPU))
    if engine.n_cpu_moe:
        overrides.extend(n_cpu_moe_rules(engine.n_cpu_moe, moe_layers, caps.n_cpu_moe_from_end))
    flash = engine.flash_attn != "off"
    if not gpus and engine.flash_attn is None:
        flash = True
    return LlamaConfig(
        ctx=engine.ctx,
        ubatch=engine.ubatch,
        batch=engine.batch,
        gpu_layers=-1 if engine.gpu_layers is None else engine.gpu_layers,
        overrides=tuple(overrides),
        cache_type_k=engine.cache_type_k,
        cache_type_v=engine.cache_type_v,
        flash_attn=flash,
        load_mode=engine.load_mode or "mmap",
        parallel=engine.parallel or caps.default_parallel,
        tensor_split=engine.tensor_split,
        cache_ram_mib=(
            engine.cache_ram_mib if engine.cache_ram_mib is not None else caps.default_cache_ram_mib
        ),
        gpus=tuple(name for name, _ in gpus),
        gpu_vram_mib=tuple(v for _, v in gpus),
        cuda_context_mib=hardware.budget.cuda_context_mib,
        split_mode=engine.split_mode or "layer",
        ngl_counts_output=caps.ngl_counts_output,
        # -np unset is llama-server's auto: 4 slots sharing one unified KV stream
        kv_unified=engine.kv_unified or engine.parallel is None,
        # upstream's CPU backend repacks some types when no GPU takes the host weights
        repack_types=REPACK_AVX2 if engine.kind == "llama.cpp" and not gpus else (),
        fa_f16_pool=engine.kind == "ik_llama.cpp",
    )


def estimate(
    resolved: ResolvedProfile, header: GgufHeader | None
) -> tuple[MemoryEstimate, str, int]:
    """Memory per device, where the tensor sizes came from, and the weights' total bytes."""
    profile, arch, hardware = resolved.profile, resolved.architecture, resolved.hardware
    tensors, source = model_tensors(resolved, header)
    model_bytes = sum(t.nbytes for t in tensors)
    gpus = gpus_for(profile, hardware)
    engine = profile.engine
    if isinstance(engine, VllmEngine):
        cfg = VllmConfig(
            max_model_len=engine.max_model_len,
            max_num_seqs=engine.max_num_seqs,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            tensor_parallel_size=engine.tensor_parallel_size,
            kv_cache_dtype=engine.kv_cache_dtype,
            gpu_vram_mib=tuple(v for _, v in gpus),
            gpu_names=tuple(name for name, _ in gpus),
        )
        return estimate_vllm(arch, tensors, cfg), source, model_bytes
    return estimate_llama(arch, tensors, llama_config_for(resolved)), source, model_bytes


def llama_config_for(resolved: ResolvedProfile) -> LlamaConfig:
    """The memory model's view of a resolved llama.cpp / ik_llama.cpp profile."""
    profile, arch, hardware = resolved.profile, resolved.architecture, resolved.hardware
    engine = profile.engine
    assert isinstance(engine, LlamaEngine)
    caps = engine_caps(engine.kind, engine.version)
    moe_layers = [i for i in range(arch.n_layer) if arch.is_moe_layer(i)]
    return llama_config(engine, caps, hardware, engine_gpus(profile, hardware), moe_layers)


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


def with_engine(resolved: ResolvedProfile, **changes: Any) -> ResolvedProfile:
    """``resolved`` with some engine settings changed."""
    engine = resolved.profile.engine.model_copy(update=changes)
    profile = resolved.profile.model_copy(update={"engine": engine})
    return replace(resolved, profile=profile)


# ---------------------------------------------------------------- searches


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest ``n`` in ``[low, high]`` with ``ok(n)``, for ``ok`` true up to a point."""
    if high < low or not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def smallest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest ``n`` in ``[low, high]`` with ``ok(n)``, for ``ok`` true from a point on."""
    if high < low or not ok(high):
        return None
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low
