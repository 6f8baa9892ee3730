"""Memory model of vLLM: weights plus a paged KV pool under ``gpu_memory_utilization``.

vLLM takes ``utilization × total VRAM`` per GPU, subtracts the weights and the activation
peak of its profiling run, and gives the rest to the KV pool. A request longer than the pool
holds is refused at start-up, so the pool's token capacity must reach ``max_model_len``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.memory.breakdown import MIB, DeviceMemory, MemoryEstimate
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.schema import Architecture

DEFAULT_MAX_BATCHED_TOKENS = 8192
ACTIVATION_TENSORS = 5
"""Hidden-state-sized bf16 tensors live at the profiling peak (calibrated on seed 004)."""


@dataclass(frozen=True)
class VllmConfig:
    """The memory-relevant settings of one ``vllm serve`` command line."""

    max_model_len: int
    max_num_seqs: int
    gpu_memory_utilization: float
    tensor_parallel_size: int
    kv_cache_dtype: str
    gpu_vram_mib: tuple[int, ...]
    gpu_names: tuple[str, ...] = ()
    """The GPUs vLLM sees, in order (default CUDA0, CUDA1, ...)."""


def kv_bytes_per_token(arch: Architecture, kv_cache_dtype: str) -> int:
    """KV bytes one token takes across all attention layers (bf16, or fp8 when asked)."""
    per_elem = 1 if kv_cache_dtype.startswith("fp8") else 2
    layers = sum(1 for layer in range(arch.n_layer) if arch.has_kv(layer))
    return 2 * layers * arch.n_head_kv * arch.head_dim * per_elem


def activation_bytes(arch: Architecture, cfg: VllmConfig) -> int:
    """Peak activation of the profiling forward pass."""
    tokens = min(DEFAULT_MAX_BATCHED_TOKENS, max(cfg.max_model_len, cfg.max_num_seqs))
    return ACTIVATION_TENSORS * tokens * arch.n_embd * 2


def estimate_vllm(arch: Architecture, tensors: Sequence[Tensor], cfg: VllmConfig) -> MemoryEstimate:
    """Per-GPU memory and the KV pool's token capacity."""
    tp = cfg.tensor_parallel_size
    weights_total = sum(t.nbytes for t in tensors)
    extra = int(arch.extra_params_b * 1e9 * 2)
    weights_per_gpu = (weights_total + extra) // tp
    per_token = kv_bytes_per_token(arch, cfg.kv_cache_dtype) // tp
    activation = activation_bytes(arch, cfg)
    devices: dict[str, DeviceMemory] = {}
    capacities: list[int] = []
    for index in range(tp):
        vram = cfg.gpu_vram_mib[index] * MIB if index < len(cfg.gpu_vram_mib) else 0
        budget = int(vram * cfg.gpu_memory_utilization)
        pool = max(budget - weights_per_gpu - activation, 0)
        capacities.append(pool // per_token if per_token else 0)
        name = cfg.gpu_names[index] if index < len(cfg.gpu_names) else f"CUDA{index}"
        devices[name] = DeviceMemory(
            weights=weights_per_gpu, kv=pool, compute=activation, overhead=0
        )
    capacity = min(capacities) if capacities else 0
    facts: dict[str, int | float | str] = {
        "kv_bytes_per_token": per_token * tp,
        "kv_pool_tokens": capacity,
        "max_model_len": cfg.max_model_len,
        "utilization_budget": int(
            (cfg.gpu_vram_mib[0] if cfg.gpu_vram_mib else 0) * MIB * cfg.gpu_memory_utilization
        ),
    }
    notes = (
        f"KV pool holds {capacity:,} tokens at {per_token * tp:,} bytes/token "
        f"({cfg.kv_cache_dtype} KV, TP={tp})",
    )
    return MemoryEstimate(devices, notes, facts)
