"""What each engine (and version) calls its flags, and which flags it knows."""

from __future__ import annotations

import re
from dataclasses import dataclass

LOAD_MODE_SINCE_BUILD = 10114
"""First upstream build with ``--load-mode`` (PR #20834); older builds take ``--mlock``."""


@dataclass(frozen=True)
class EngineCaps:
    """Spelling choices the templates branch on."""

    kind: str
    load_mode_flag: bool
    grouped_expert_routing: bool
    cache_ram: bool
    default_cache_ram_mib: int
    default_parallel: int
    ngl_counts_output: bool
    """Upstream: ``-ngl N`` = output layer + last N-1 blocks. ik_llama.cpp: last N blocks."""
    n_cpu_moe_from_end: bool
    """ik_llama.cpp's ``--n-cpu-moe N`` takes the last N MoE layers, upstream the first N."""
    api_key_env: bool = True
    """Whether the server reads its API key from ``LLAMA_API_KEY`` (ik_llama.cpp does not)."""


def build_number(version: str) -> int | None:
    """``b6123`` or ``6123`` → 6123; ``latest`` → None (newest known behaviour)."""
    match = re.fullmatch(r"b?(\d+)", version.strip())
    return int(match.group(1)) if match else None


def engine_caps(kind: str, version: str) -> EngineCaps:
    """Capabilities of one engine at one version."""
    if kind == "ik_llama.cpp":
        return EngineCaps(kind, False, True, True, 8192, 1, False, True, api_key_env=False)
    if kind == "llama.cpp":
        build = build_number(version)
        new = build is None or build >= LOAD_MODE_SINCE_BUILD
        return EngineCaps(kind, new, False, True, 8192, 4 if new else 1, True, False)
    return EngineCaps(kind, False, False, False, 0, 1, False, False)


# llama-server flag aliases: canonical (long) spelling first.
LLAMA_ALIASES: dict[str, tuple[str, ...]] = {
    "--ctx-size": ("-c",),
    "--batch-size": ("-b",),
    "--ubatch-size": ("-ub",),
    "--threads": ("-t",),
    "--threads-batch": ("-tb",),
    "--n-gpu-layers": ("-ngl", "--gpu-layers"),
    "--override-tensor": ("-ot",),
    "--cpu-moe": ("-cmoe",),
    "--n-cpu-moe": ("-ncmoe",),
    "--cache-type-k": ("-ctk",),
    "--cache-type-v": ("-ctv",),
    "--flash-attn": ("-fa",),
    "--parallel": ("-np",),
    "--model": ("-m",),
    "--tensor-split": ("-ts",),
    "--split-mode": ("-sm",),
    "--main-gpu": ("-mg",),
    "--device": ("-dev",),
    "--kv-unified": ("-kvu",),
    "--cache-ram": ("-cram",),
    "--load-mode": ("-lm",),
    "--no-repack": ("-nr",),
    "--temp": ("--temperature",),
    "--seed": ("-s",),
    "--alias": ("-a",),
    "--grouped-expert-routing": ("-ger",),
}

CANONICAL: dict[str, str] = {
    alias: canonical for canonical, aliases in LLAMA_ALIASES.items() for alias in aliases
}


def canonical_flag(flag: str) -> str:
    """The long spelling of a llama-server flag (unknown flags are returned unchanged)."""
    return CANONICAL.get(flag, flag)


def known_flags(kind: str) -> frozenset[str]:
    """Every flag spelling the engine's server accepts, from the catalogue shipped with orch."""
    from orchestrator.flagcatalogue import load_catalogue

    return load_catalogue(kind if kind in ("llama.cpp", "ik_llama.cpp") else "vllm").spellings


def flags_in(argv: list[str] | tuple[str, ...]) -> list[str]:
    """The flag names (``--x`` / ``-x``, ``=value`` stripped) appearing in an argv."""
    out = []
    for arg in argv:
        if re.match(r"^--?[a-zA-Z]", arg):
            out.append(arg.split("=", 1)[0])
    return out
