"""Which prompt sizes a bench asks for, in which order, and which depths a sweep visits.

Pure. Seed 003's 28 runs spread their prompts from 550 to 15,866 tokens, in no particular
order; a bench here does the same within what one request may hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.engines import adapter_for
from orchestrator.profiles.schema import ModelProfile

SERIES_LADDER = (512, 1024, 2048, 4096, 8192, 16384)
"""Prompt sizes of a series: a few hundred to ~16K tokens, as in seed 003."""
SWEEP_FIRST = 512
"""The smallest non-zero depth of a sweep; depths double from there."""
TEMPLATE_MARGIN = 64
"""Tokens kept free for the chat template around the prompt, and for a tokenizer misjudged."""
DEPTH_ZERO_TOKENS = 16
"""A sweep's "depth 0": a prompt this short (a request cannot be empty)."""


def request_limit(profile: ModelProfile) -> int:
    """The most tokens (prompt + generated) one request may hold.

    llama-server splits ``ctx`` between its slots unless the KV cache is unified (which it
    is when orch leaves ``parallel`` to the engine); vLLM holds ``max_model_len`` per request.
    """
    return adapter_for(profile.engine).request_tokens(profile.engine)


def prompt_limit(request_tokens: int, max_tokens: int) -> int:
    """The largest prompt that leaves room for ``max_tokens`` and the chat template."""
    return request_tokens - max_tokens - TEMPLATE_MARGIN


def series_sizes(limit: int) -> list[int]:
    """The ladder of prompt sizes that fit ``limit``, topped with ``limit`` itself.

    Empty when not even the smallest size fits.
    """
    sizes = [size for size in SERIES_LADDER if size <= limit]
    if limit < SERIES_LADDER[-1] and limit >= SERIES_LADDER[0]:
        if not sizes or limit > sizes[-1] * 1.2:
            sizes.append(limit)
    return sizes


def interleave(sizes: Sequence[int]) -> list[int]:
    """Smallest, largest, second smallest, second largest, ...: neighbours differ in size."""
    ordered = sorted(sizes)
    out: list[int] = []
    while ordered:
        out.append(ordered.pop(0))
        if ordered:
            out.append(ordered.pop())
    return out


def series_schedule(sizes: Sequence[int], runs: int) -> list[int]:
    """The prompt size of each of ``runs`` requests: the sizes interleaved, cycled."""
    order = interleave(sizes)
    return [order[i % len(order)] for i in range(runs)] if order else []


def sweep_depths(limit: int) -> list[int]:
    """0, 512, 1K, 2K, 4K, ... doubling while it fits, then ``limit`` itself."""
    depths = [0]
    depth = SWEEP_FIRST
    while depth <= limit:
        depths.append(depth)
        depth *= 2
    if limit > depths[-1] * 1.2:
        depths.append(limit)
    return depths
