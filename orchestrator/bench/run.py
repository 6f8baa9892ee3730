"""The requests of a bench, against a running engine.

Every request generates exactly ``max_tokens`` (``ignore_eos``). Unless the user asks for
the prompt cache, each prompt starts with a part unique to the bench and the run, so neither
llama-server's slot cache (``cache_prompt``, also turned off per request) nor its RAM cache
(``--cache-ram``) nor vLLM's prefix cache finds anything to reuse: every run prefills its
whole prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.bench.ledger import RunRow
from orchestrator.bench.schedule import DEPTH_ZERO_TOKENS
from orchestrator.errors import LaunchError
from orchestrator.health import get_json, request
from orchestrator.warmup import Measure, RequestStats

FILLER = "the quick brown fox jumps over the lazy dog "
"""Nine words; roughly one token per word with most tokenizers."""
SERIES_TIMEOUT_S = 600.0
"""Per request: a 16K prompt at 100 tok/s plus 2048 tokens at 20 tok/s fits (seed 003)."""
MIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Target:
    """A running engine and how to measure one request on it."""

    endpoint: str
    model: str
    api_key: str | None
    measure: Measure
    """The engine's measure: llama-server's own timings, or vLLM's stream timed by orch."""
    no_cache: Mapping[str, Any] = field(default_factory=dict)
    """Request fields that turn the engine's prompt cache off (llama-server: cache_prompt)."""


def bench_prompt(tokens: int, run: int, tokens_per_word: float = 1.0, nonce: str = "") -> str:
    """About ``tokens`` tokens of filler, unique per run (and per ``nonce``): no cache hits.

    The unique part comes first, so a prefix cache matches nothing beyond the chat template.
    """
    words = FILLER.split()
    count = max(int((tokens - 16) / tokens_per_word), 1)
    body = " ".join(words[i % len(words)] for i in range(count))
    return f"{nonce} run {run} of {tokens}: {body}".lstrip()


def tokens_per_word(endpoint: str, model: str, api_key: str | None = None) -> float:
    """Tokens per filler word, from the engine's ``/tokenize``; 1.0 when it has none.

    llama-server takes ``{"content": ...}``, vLLM ``{"model": ..., "prompt": ...}``.
    """
    sample = FILLER * 20
    for body in ({"content": sample}, {"model": model, "prompt": sample}):
        try:
            status, data = request(endpoint, "/tokenize", method="POST", body=body, api_key=api_key)
            if status == 200:
                count = len(json.loads(data)["tokens"])
                if count:
                    return count / len(sample.split())
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 1.0


def engine_build(endpoint: str, api_key: str | None = None, binary: Path | None = None) -> str:
    """What build the engine says it is.

    llama-server's ``/props`` ``build_info``, else vLLM's ``/version``, else the first line
    of ``BINARY --version`` when orch knows the binary (a process), else "unknown".
    """
    try:
        props = get_json(endpoint, "/props", api_key=api_key)
    except (OSError, ValueError):
        props = None
    if isinstance(props, dict) and props.get("build_info"):
        return str(props["build_info"])
    try:
        version = get_json(endpoint, "/version", api_key=api_key)
    except (OSError, ValueError):
        version = None
    # vLLM answers {"version": "0.11.0"}; ik_llama.cpp answers {"version": 4} (an API level)
    if isinstance(version, dict) and isinstance(version.get("version"), str):
        return str(version["version"])
    if binary is not None:
        return version_line(binary) or "unknown"
    return "unknown"


def version_line(binary: Path) -> str:
    """The first line ``BINARY --version`` prints ("" if it cannot be run)."""
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def file_digest(path: Path) -> str:
    """``sha256:`` and the first 16 hex digits of the file's SHA-256 ("" if unreadable)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return f"sha256:{digest.hexdigest()[:16]}"


def _row(run: int, requested: int, stats: RequestStats) -> RunRow:
    return RunRow(
        run=run,
        requested_tokens=requested,
        prompt_tokens=stats.prompt_tokens,
        generated=stats.completion_tokens,
        pp_tps=stats.prompt_tps,
        tg_tps=stats.gen_tps,
        ttft_s=stats.ttft_s,
        total_s=stats.wall_s,
        source=stats.source,
    )


class _Requests:
    """Builds and sends the bench's prompts."""

    def __init__(self, target: Target, *, max_tokens: int, prompt_cache: bool) -> None:
        self.target = target
        self.max_tokens = max_tokens
        self.extra: dict[str, Any] = {"ignore_eos": True}
        if not prompt_cache:
            self.extra.update(target.no_cache)
        self.nonce = "" if prompt_cache else os.urandom(4).hex()
        self.ratio = tokens_per_word(target.endpoint, target.model, target.api_key)

    def send(self, run: int, tokens: int, timeout: float) -> RequestStats:
        # With the cache allowed, a size's prompt is the same text every time it comes round.
        prompt = bench_prompt(tokens, 0 if not self.nonce else run, self.ratio, self.nonce)
        return self.target.measure(
            self.target.endpoint,
            [{"role": "user", "content": prompt}],
            max_tokens=self.max_tokens,
            model=self.target.model,
            api_key=self.target.api_key,
            extra=self.extra,
            timeout=timeout,
        )


def run_series(
    target: Target,
    schedule: Sequence[int],
    *,
    max_tokens: int,
    prompt_cache: bool = False,
    on_row: Callable[[RunRow], None] = lambda row: None,
) -> list[RunRow]:
    """One request per entry of ``schedule`` (its prompt size), in order.

    Raises:
        LaunchError: The engine answered with an error or not at all.
    """
    requests = _Requests(target, max_tokens=max_tokens, prompt_cache=prompt_cache)
    rows = []
    for run, tokens in enumerate(schedule, start=1):
        row = _row(run, tokens, requests.send(run, tokens, SERIES_TIMEOUT_S))
        on_row(row)
        rows.append(row)
    return rows


def run_sweep(
    target: Target,
    depths: Sequence[int],
    *,
    max_tokens: int,
    budget_s: float,
    prompt_cache: bool = False,
    on_row: Callable[[RunRow], None] = lambda row: None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[RunRow], list[str]]:
    """One request per depth (a fresh prompt that long), shallowest first, within ``budget_s``.

    Before each depth, its time is predicted from the last one measured (its prompt at the
    last PP rate, its generation at the last TG rate); a depth that would not finish within
    the budget left is skipped with every deeper one, and said so. Each request also times
    out when the budget runs out.

    Returns:
        The measured rows, and one line per skipped depth saying why.

    Raises:
        LaunchError: The engine answered with an error (not merely slowly).
    """
    requests = _Requests(target, max_tokens=max_tokens, prompt_cache=prompt_cache)
    start = clock()
    rows: list[RunRow] = []
    skipped: list[str] = []
    for run, depth in enumerate(depths, start=1):
        left = budget_s - (clock() - start)
        predicted = _predict(rows[-1], depth, max_tokens) if rows else 0.0
        if predicted > left or left <= 0:
            why = (
                f"depth {depth} was predicted to take {predicted:.0f} s, with "
                f"{max(left, 0):.0f} s of the {budget_s:.0f} s budget left"
            )
            skipped = [f"depth {d}: skipped ({why})" for d in depths[run - 1 :]]
            break
        try:
            stats = requests.send(run, max(depth, DEPTH_ZERO_TOKENS), max(left, MIN_TIMEOUT_S))
        except LaunchError:
            if clock() - start < budget_s:
                raise
            why = f"depth {depth} did not finish within the {budget_s:.0f} s budget"
            skipped = [f"depth {d}: skipped ({why})" for d in depths[run - 1 :]]
            break
        row = _row(run, depth, stats)
        on_row(row)
        rows.append(row)
    return rows, skipped


def _predict(last: RunRow, depth: int, max_tokens: int) -> float:
    """Seconds a request at ``depth`` should take, at the last depth's rates."""
    prefill = depth / last.pp_tps if last.pp_tps > 0 else 0.0
    generate = max_tokens / last.tg_tps if last.tg_tps > 0 else 0.0
    return prefill + generate
