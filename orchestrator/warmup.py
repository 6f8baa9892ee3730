"""Warm-up and benchmark requests against ``/v1/chat/completions``.

Figures come from llama-server's ``timings`` object when present (prompt_ms,
prompt_per_second, predicted_per_second); otherwise from the wall clock and ``usage``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.errors import LaunchError
from orchestrator.health import request
from orchestrator.profiles.schema import Warmup

FILLER = "the quick brown fox jumps over the lazy dog "
"""Nine words; roughly one token per word with most tokenizers."""


@dataclass(frozen=True)
class RequestStats:
    """One completed request."""

    ttft_s: float
    prompt_tokens: int
    completion_tokens: int
    prompt_tps: float
    gen_tps: float
    wall_s: float
    source: str
    """``timings`` (engine-reported) or ``wall-clock``."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def chat(
    endpoint: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    model: str,
    api_key: str | None = None,
    extra: dict[str, Any] | None = None,
    timeout: float = 300.0,
) -> RequestStats:
    """One non-streamed chat completion, measured.

    Raises:
        LaunchError: The server answered with an error or not at all.
    """
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    body.update(extra or {})
    start = time.perf_counter()
    try:
        status, data = request(
            endpoint,
            "/v1/chat/completions",
            method="POST",
            body=body,
            api_key=api_key,
            timeout=timeout,
        )
    except OSError as exc:
        raise LaunchError(f"{endpoint}/v1/chat/completions: no answer ({exc})") from None
    wall = time.perf_counter() - start
    if status != 200:
        raise LaunchError(
            f"{endpoint}/v1/chat/completions: HTTP {status}: {data[:300].decode(errors='replace')}"
        )
    try:
        reply = json.loads(data)
    except ValueError:
        raise LaunchError(f"{endpoint}/v1/chat/completions: not JSON") from None
    usage = reply.get("usage") or {}
    timings = reply.get("timings")
    if isinstance(timings, dict) and "prompt_ms" in timings:
        prompt_n = int(timings.get("prompt_n", usage.get("prompt_tokens", 0)))
        return RequestStats(
            ttft_s=float(timings["prompt_ms"]) / 1000,
            prompt_tokens=prompt_n,
            completion_tokens=int(timings.get("predicted_n", usage.get("completion_tokens", 0))),
            prompt_tps=float(timings.get("prompt_per_second", 0.0)),
            gen_tps=float(timings.get("predicted_per_second", 0.0)),
            wall_s=wall,
            source="timings",
        )
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    # Without engine timings, the whole wall time bounds both phases; report it as is.
    return RequestStats(
        ttft_s=wall,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        prompt_tps=prompt_tokens / wall if wall > 0 else 0.0,
        gen_tps=completion / wall if wall > 0 else 0.0,
        wall_s=wall,
        source="wall-clock",
    )


def warm_up(
    endpoint: str, warmup: Warmup, *, model: str, api_key: str | None = None
) -> list[RequestStats]:
    """``warmup.requests`` requests with the fixed system prompt (primes the prompt cache)."""
    messages = [
        {"role": "system", "content": warmup.system_prompt},
        {"role": "user", "content": warmup.prompt},
    ]
    return [
        chat(endpoint, messages, max_tokens=warmup.max_tokens, model=model, api_key=api_key)
        for _ in range(warmup.requests)
    ]


@dataclass(frozen=True)
class Spread:
    """min / mean / max of one figure."""

    min: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Spread of ``values`` (zeros if empty)."""
        if not values:
            return cls(0.0, 0.0, 0.0)
        return cls(min(values), statistics.fmean(values), max(values))


@dataclass(frozen=True)
class BenchRow:
    """Results for one prompt size."""

    prompt_tokens: int
    measured_prompt_tokens: int
    runs: int
    prefill_tps: Spread
    gen_tps: Spread
    ttft_s: Spread
    source: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def bench_prompt(tokens: int, run: int, tokens_per_word: float = 1.0) -> str:
    """About ``tokens`` tokens of filler, unique per run so no prompt cache hits."""
    words = FILLER.split()
    count = max(int((tokens - 12) / tokens_per_word), 1)
    body = " ".join(words[i % len(words)] for i in range(count))
    return f"run {run}: {body}"


def tokens_per_word(endpoint: str, api_key: str | None = None) -> float:
    """llama-server's ``/tokenize`` on the filler; 1.0 when the server has no such route."""
    sample = FILLER * 20
    try:
        status, data = request(
            endpoint, "/tokenize", method="POST", body={"content": sample}, api_key=api_key
        )
        n = len(json.loads(data)["tokens"]) if status == 200 else 0
    except (OSError, ValueError, KeyError, TypeError):
        n = 0
    return n / len(sample.split()) if n else 1.0


def bench(
    endpoint: str,
    *,
    runs: int,
    prompt_tokens: Sequence[int],
    max_tokens: int,
    model: str,
    api_key: str | None = None,
    llama: bool = True,
) -> list[BenchRow]:
    """``runs`` requests per prompt size; prefill and generation tok/s spread per size."""
    extra: dict[str, Any] = {"cache_prompt": False, "ignore_eos": True} if llama else {}
    ratio = tokens_per_word(endpoint, api_key) if llama else 1.0
    rows = []
    for size in prompt_tokens:
        stats = [
            chat(
                endpoint,
                [{"role": "user", "content": bench_prompt(size, run, ratio)}],
                max_tokens=max_tokens,
                model=model,
                api_key=api_key,
                extra=extra,
            )
            for run in range(runs)
        ]
        rows.append(
            BenchRow(
                prompt_tokens=size,
                measured_prompt_tokens=round(statistics.fmean(s.prompt_tokens for s in stats)),
                runs=runs,
                prefill_tps=Spread.of([s.prompt_tps for s in stats]),
                gen_tps=Spread.of([s.gen_tps for s in stats]),
                ttft_s=Spread.of([s.ttft_s for s in stats]),
                source=stats[0].source if stats else "",
            )
        )
    return rows
