"""One adapter per engine: everything that differs between llama.cpp, ik_llama.cpp and vLLM.

``adapter_for(profile.engine)`` (or ``adapter_for_kind("vllm")``) returns the engine's adapter:
its template, flag catalogue, API-key handling, readiness, warm-up measure, argument parser
and memory estimator. Code outside this package asks the adapter instead of branching on the
engine's type.
"""

from __future__ import annotations

from orchestrator.engines.base import (
    ArgsError,
    EngineAdapter,
    EngineCaps,
    EngineSettings,
    OffGpu,
    build_number,
)
from orchestrator.engines.llama_cpp import (
    FUSED_GDN_SINCE_BUILD,
    LOAD_MODE_SINCE_BUILD,
    IkLlamaCppAdapter,
    LlamaCppAdapter,
    LlamaServerAdapter,
    llama_settings,
)
from orchestrator.engines.vllm import VllmAdapter, vllm_settings

__all__ = [
    "ADAPTERS",
    "FUSED_GDN_SINCE_BUILD",
    "LLAMA_SERVERS",
    "LOAD_MODE_SINCE_BUILD",
    "ArgsError",
    "EngineAdapter",
    "EngineCaps",
    "EngineSettings",
    "IkLlamaCppAdapter",
    "LlamaCppAdapter",
    "LlamaServerAdapter",
    "OffGpu",
    "VllmAdapter",
    "adapter_for",
    "adapter_for_kind",
    "build_number",
    "llama_adapter",
    "llama_settings",
    "vllm_settings",
]

LLAMA_SERVERS: dict[str, LlamaServerAdapter] = {
    adapter.kind: adapter for adapter in (LlamaCppAdapter(), IkLlamaCppAdapter())
}
"""The engines whose server is a llama-server (``orch estimate --engine``)."""
ADAPTERS: dict[str, EngineAdapter] = {**LLAMA_SERVERS, "vllm": VllmAdapter()}


def adapter_for_kind(kind: str) -> EngineAdapter:
    """The adapter of ``engine.kind`` ``kind``."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown engine {kind!r} (valid: {', '.join(ADAPTERS)})") from None


def adapter_for(engine: EngineSettings) -> EngineAdapter:
    """The adapter of a profile's ``[engine]``."""
    return adapter_for_kind(engine.kind)


def llama_adapter(engine: EngineSettings) -> LlamaServerAdapter:
    """The adapter of a llama-server engine (placement and argv parsing are theirs alone)."""
    adapter = adapter_for(engine)
    if not isinstance(adapter, LlamaServerAdapter):
        raise TypeError(f"{engine.kind} is not a llama-server engine")
    return adapter
