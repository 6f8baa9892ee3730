"""vLLM's OpenAI-compatible server (``vllm serve``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from orchestrator.engines.base import EngineAdapter, EngineCaps, EngineSettings, Fits, OffGpu
from orchestrator.memory.breakdown import MemoryEstimate
from orchestrator.memory.tensors import Tensor
from orchestrator.memory.vllm import VllmConfig, estimate_vllm
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import ModelProfile, VllmEngine


def vllm_settings(engine: EngineSettings) -> VllmEngine:
    """``engine`` as vLLM settings (a llama-server profile here is a bug in orch)."""
    if not isinstance(engine, VllmEngine):
        raise TypeError(f"{engine.kind} is not vLLM")
    return engine


class VllmAdapter(EngineAdapter):
    """vLLM: a Hugging Face repo, a paged KV pool, no engine timings, a slow ``--help``."""

    kind: ClassVar[str] = "vllm"
    label: ClassVar[str] = "vLLM"
    template: ClassVar[str] = "engines/vllm.j2"
    api_key_variable: ClassVar[str | None] = "VLLM_API_KEY"
    api_key_file_flag: ClassVar[bool] = False
    reads_gguf: ClassVar[bool] = False
    reports_timings: ClassVar[bool] = False
    places_layers: ClassVar[bool] = False
    help_lists_flags: ClassVar[bool] = False
    """Its ``--help`` imports torch: seconds per check."""
    model_id_flag: ClassVar[str] = "--served-model-name"

    def caps(self, version: str) -> EngineCaps:
        """None of llama-server's choices apply."""
        return EngineCaps()

    def own_model_id(self, engine: EngineSettings) -> str | None:
        """``--served-model-name`` in ``extra_args``, else ``engine.served_model_name``."""
        own = super().own_model_id(engine)
        return own if own is not None else vllm_settings(engine).served_model_name or None

    def slots(self, engine: EngineSettings) -> int:
        """``max_num_seqs``."""
        return vllm_settings(engine).max_num_seqs

    def request_tokens(self, engine: EngineSettings) -> int:
        """``max_model_len`` (per request)."""
        return vllm_settings(engine).max_model_len

    def served_name(self, profile: ModelProfile, name: str) -> str | None:
        """The model id: vLLM answers /health before it lists the model (and checks the field)."""
        return self.model_id(profile, name)

    def estimate(
        self,
        resolved: ResolvedProfile,
        tensors: Sequence[Tensor],
        gpus: Sequence[tuple[str, int]],
    ) -> MemoryEstimate:
        """Weights plus the paged KV pool (``orchestrator.memory.vllm``)."""
        e = vllm_settings(resolved.profile.engine)
        cfg = VllmConfig(
            max_model_len=e.max_model_len,
            max_num_seqs=e.max_num_seqs,
            gpu_memory_utilization=e.gpu_memory_utilization,
            tensor_parallel_size=e.tensor_parallel_size,
            kv_cache_dtype=e.kv_cache_dtype,
            gpu_vram_mib=tuple(v for _, v in gpus),
            gpu_names=tuple(name for name, _ in gpus),
        )
        return estimate_vllm(resolved.architecture, tensors, cfg)

    def capacity_problems(self, engine: EngineSettings, memory: MemoryEstimate) -> list[str]:
        """The KV pool must hold ``max_model_len`` tokens, or vLLM refuses to start."""
        e = vllm_settings(engine)
        capacity = int(memory.facts.get("kv_pool_tokens", 0))
        if capacity < e.max_model_len:
            return [f"vLLM KV pool holds {capacity:,} tokens < max_model_len {e.max_model_len:,}"]
        return []

    def suggestions(
        self, resolved: ResolvedProfile, memory: MemoryEstimate, *, over_budget: bool, fits: Fits
    ) -> list[str]:
        """Changes that would let the KV pool hold ``max_model_len``."""
        e = vllm_settings(resolved.profile.engine)
        capacity = int(memory.facts.get("kv_pool_tokens", 0))
        if capacity >= e.max_model_len:
            return []
        out = [f"engine.max_model_len = {capacity} (what the KV pool holds)"] if capacity else []
        if not e.kv_cache_dtype.startswith("fp8"):
            out.append(f'engine.kv_cache_dtype = "fp8" (holds about {2 * capacity:,} tokens)')
        if e.tensor_parallel_size == 1 and len(resolved.hardware.gpus) >= 2:
            out.append("engine.tensor_parallel_size = 2 (weights and KV split over two GPUs)")
        return out

    def plan_warnings(self, profile: ModelProfile, *, devices: str, podman: bool) -> list[str]:
        """In podman: the entrypoint, and the GPUs podman passes in."""
        if not podman:
            return []
        out = [
            "vLLM in podman: the image's entrypoint must be `vllm serve` (as vllm/vllm-openai's is)"
        ]
        if devices:
            out.append(
                "gpus: vLLM in podman uses every GPU in runtime.devices; list only "
                f"{devices} there (e.g. nvidia.com/gpu={devices.removeprefix('CUDA')})"
            )
        return out

    def off_gpu(self, engine: EngineSettings, *, gpus_allowed: bool = True) -> OffGpu | None:
        """``gpus = []``: ``CUDA_VISIBLE_DEVICES=`` (vllm serve has no device flag)."""
        return None if gpus_allowed else OffGpu(env=(("CUDA_VISIBLE_DEVICES", ""),))

    def process_env(self, env: Mapping[str, str], gpu_indices: Sequence[int]) -> dict[str, str]:
        """``CUDA_VISIBLE_DEVICES`` (vllm serve has no device flag)."""
        out = dict(env)
        if gpu_indices:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_indices)
        return out
