"""Warm-up (and bench) requests against ``/v1/chat/completions``.

llama-server: one non-streamed request; the figures are its own ``timings`` object
(prompt_ms, prompt_per_second, predicted_per_second).

vLLM reports no timings, so its requests are streamed (``"stream": true`` with
``stream_options.include_usage``) and orch times the server-sent events itself: TTFT is the
arrival of the first chunk carrying generated text, prompt tok/s is prompt_tokens / TTFT and
generation tok/s is (completion_tokens - 1) / (last token - first token), with the token
counts from the final ``usage`` chunk.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.errors import LaunchError
from orchestrator.health import request, send
from orchestrator.profiles.schema import Warmup


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
    """``timings`` (engine-reported) or ``wall-clock`` (orch's clock; streamed for vLLM)."""

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


def _sse_data(response: http.client.HTTPResponse) -> Iterator[tuple[float, bytes]]:
    """(arrival time, payload) of each ``data:`` line of a server-sent event stream."""
    while True:
        line = response.readline()
        if not line:
            return
        now = time.perf_counter()
        if line.startswith(b"data:"):
            yield now, line[5:].strip()


def _has_text(delta: dict[str, Any]) -> bool:
    """Whether a streamed delta carries generated output (answer, reasoning or tool call)."""
    return bool(
        delta.get("content")
        or delta.get("reasoning_content")
        or delta.get("reasoning")
        or delta.get("tool_calls")
    )


def chat_streamed(
    endpoint: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    model: str,
    api_key: str | None = None,
    extra: dict[str, Any] | None = None,
    timeout: float = 300.0,
) -> RequestStats:
    """One streamed chat completion, timed by the arrival of its chunks (vLLM).

    ``timeout`` bounds each read, not the whole stream.

    Raises:
        LaunchError: The server answered with an error, broke off the stream, or did not answer.
    """
    url = f"{endpoint}/v1/chat/completions"
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(extra or {})
    first: float | None = None
    last: float | None = None
    text_chunks = 0
    usage: dict[str, Any] = {}
    done = False
    start = time.perf_counter()
    conn: http.client.HTTPConnection | None = None
    try:
        conn, response = send(
            endpoint,
            "/v1/chat/completions",
            method="POST",
            body=body,
            api_key=api_key,
            timeout=timeout,
            accept="text/event-stream",
        )
        if response.status != 200:
            data = response.read()
            raise LaunchError(
                f"{url}: HTTP {response.status}: {data[:300].decode(errors='replace')}"
            )
        for now, payload in _sse_data(response):
            if payload == b"[DONE]":
                done = True
                break
            try:
                event = json.loads(payload)
            except ValueError:
                raise LaunchError(f"{url}: not a JSON event: {payload[:200]!r}") from None
            if not isinstance(event, dict):
                raise LaunchError(f"{url}: not a JSON object: {payload[:200]!r}")
            if "error" in event or event.get("object") == "error":
                raise LaunchError(
                    f"{url}: error in stream: {payload[:300].decode(errors='replace')}"
                )
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            choices = event.get("choices") or []
            if not choices:
                continue
            last = now
            delta = choices[0].get("delta") or {}
            if _has_text(delta):
                text_chunks += 1
                if first is None:
                    first = now
    except (OSError, http.client.HTTPException) as exc:
        raise LaunchError(f"{url}: no answer ({exc or type(exc).__name__})") from None
    finally:
        if conn is not None:
            conn.close()
    wall = time.perf_counter() - start
    if not done:
        raise LaunchError(f"{url}: the stream ended without data: [DONE]")
    token_at = first if first is not None else last if last is not None else start + wall
    ttft = token_at - start
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", text_chunks))
    span = (last - first) if first is not None and last is not None else 0.0
    return RequestStats(
        ttft_s=ttft,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        prompt_tps=prompt_tokens / ttft if ttft > 0 else 0.0,
        gen_tps=(completion - 1) / span if completion > 1 and span > 0 else 0.0,
        wall_s=wall,
        source="wall-clock",
    )


Measure = Callable[..., RequestStats]


def _measure(llama: bool) -> Measure:
    """llama-server reports its own timings; vLLM is timed from the stream."""
    return chat if llama else chat_streamed


def warm_up(
    endpoint: str,
    warmup: Warmup,
    *,
    model: str,
    api_key: str | None = None,
    llama: bool = True,
) -> list[RequestStats]:
    """``warmup.requests`` requests with the fixed system prompt (primes the prompt cache).

    ``llama=False`` (vLLM): streamed requests, timed by orch.
    """
    messages = [
        {"role": "system", "content": warmup.system_prompt},
        {"role": "user", "content": warmup.prompt},
    ]
    measure = _measure(llama)
    return [
        measure(endpoint, messages, max_tokens=warmup.max_tokens, model=model, api_key=api_key)
        for _ in range(warmup.requests)
    ]
