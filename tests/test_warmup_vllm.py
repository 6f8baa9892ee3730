"""vLLM warm-up: streamed requests timed by orch, against the fake's vLLM-shaped SSE stream."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from orchestrator import health, warmup
from orchestrator.bench.run import Target, engine_build, run_series
from orchestrator.errors import LaunchError
from orchestrator.profiles.schema import Warmup
from tests.conftest import FAKES, OrchEnv, free_port

TTFT_S = 0.6
"""The first-token delay the fake is told to apply."""
TOKEN_S = 0.04
"""The fake's delay between tokens."""
MAX_TOKENS = 16
SERVED = "tiny-served"
WARMUP = Warmup(requests=2, system_prompt="be brief", prompt="say hi now", max_tokens=MAX_TOKENS)
PROMPT_TOKENS = 10 + 2 + 3
"""The fake counts words plus 10 for the chat template."""


@dataclass
class Fake:
    endpoint: str
    proc: subprocess.Popen[str]


@pytest.fixture
def fake_vllm() -> Iterator[Fake]:
    port = free_port()
    env = {**os.environ, "FAKE_VLLM_TTFT_S": str(TTFT_S), "FAKE_VLLM_TOKEN_S": str(TOKEN_S)}
    argv = [sys.executable, str(FAKES / "fake_vllm.py"), "serve", "test/tiny"]
    argv += ["--port", str(port), "--served-model-name", SERVED, "--delay", "0"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, text=True
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while health.probe(endpoint) != 200:
            assert proc.poll() is None, "fake vLLM exited"
            assert time.monotonic() < deadline, "fake vLLM never answered /health"
            time.sleep(0.05)
        yield Fake(endpoint, proc)
    finally:
        proc.kill()
        proc.wait()


def _raw_stream(endpoint: str) -> list[str]:
    """The ``data:`` payloads of one streamed request, as sent on the wire."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(endpoint.rsplit(":", 1)[1]), timeout=30)
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Connection": "close"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert (response.getheader("Content-Type") or "").startswith("text/event-stream")
    text = response.read().decode()
    conn.close()
    assert text.endswith("data: [DONE]\n\n")
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block]


def test_fake_streams_like_vllm(fake_vllm: Fake) -> None:
    events = _raw_stream(fake_vllm.endpoint)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:4]] == [{"content": "hi "}] * 3
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:4]] == [None, None, "length"]
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == SERVED for c in chunks)


def test_streamed_warmup_measures_first_token(fake_vllm: Fake) -> None:
    stats = warmup.warm_up(fake_vllm.endpoint, WARMUP, model=SERVED, llama=False)
    assert len(stats) == 2
    generation_s = (MAX_TOKENS - 1) * TOKEN_S
    for s in stats:
        print(
            f"\n[measured] streamed warm-up: TTFT {s.ttft_s * 1000:.0f} ms "
            f"(fake delay {TTFT_S * 1000:.0f} ms), generation {s.gen_tps:.1f} tok/s "
            f"(fake {1 / TOKEN_S:.1f}), wall {s.wall_s * 1000:.0f} ms"
        )
        # TTFT is the first token's arrival: at least the fake's delay, and well short of the
        # whole request (which adds 15 x 40 ms of generation) or of the response headers (~0).
        assert TTFT_S <= s.ttft_s < TTFT_S + generation_s / 2
        assert s.wall_s >= s.ttft_s + generation_s
        assert s.prompt_tokens == PROMPT_TOKENS  # from the usage chunk (include_usage)
        assert s.completion_tokens == MAX_TOKENS
        assert s.prompt_tps == pytest.approx(PROMPT_TOKENS / s.ttft_s)
        # (n-1) tokens over first→last token: the fake's pace, never faster.
        assert 0.5 / TOKEN_S <= s.gen_tps <= 1.02 / TOKEN_S
        assert s.source == "wall-clock"


def test_non_streamed_request_reports_whole_wall_time(fake_vllm: Fake) -> None:
    # The old measure, kept for llama-server without timings: TTFT would be the whole request.
    messages = [{"role": "user", "content": "say hi now"}]
    s = warmup.chat(fake_vllm.endpoint, messages, max_tokens=MAX_TOKENS, model=SERVED)
    assert s.ttft_s >= TTFT_S + MAX_TOKENS * TOKEN_S


def test_stream_error_is_a_launch_error(fake_vllm: Fake) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(LaunchError, match=r"HTTP 404: .*'no-such-model' does not exist"):
        warmup.chat_streamed(fake_vllm.endpoint, messages, max_tokens=4, model="no-such-model")


def test_bench_streams_for_vllm(fake_vllm: Fake) -> None:
    target = Target(fake_vllm.endpoint, SERVED, None, warmup.chat_streamed)
    rows = run_series(target, [64, 64], max_tokens=MAX_TOKENS)
    assert [r.run for r in rows] == [1, 2]
    for row in rows:
        assert TTFT_S <= row.ttft_s < TTFT_S + (MAX_TOKENS - 1) * TOKEN_S / 2
        assert row.tg_tps <= 1.02 / TOKEN_S
        assert row.prompt_tokens > 10 and row.generated == MAX_TOKENS
        assert row.source == "wall-clock"
    assert engine_build(fake_vllm.endpoint) == "0.33.0+fake"


def _vllm_profile(port: int) -> str:
    return f"""\
architecture = "synthetic-tiny-dense"
hardware = "epyc9175f-rtxpro6000"

[model]
hf_repo = "test/tiny-dense"
quant = "F16"

[engine]
kind = "vllm"
binary = "{FAKES / "fake_vllm.py"}"
max_model_len = 512
max_num_seqs = 4
served_model_name = "{SERVED}"

[runtime]
kind = "process"
env = {{ FAKE_VLLM_TTFT_S = "{TTFT_S}" }}

[publish]
port = {port}

[warmup]
requests = 2
max_tokens = {MAX_TOKENS}
"""


def test_orch_up_vllm_reports_streamed_ttft(orch_env: OrchEnv) -> None:
    # its name holds TOKEN, so a profile may not set it (secrets): the process inherits it
    orch_env.env["FAKE_VLLM_TOKEN_S"] = str(TOKEN_S)
    orch_env.write_profile("v", _vllm_profile(free_port()))
    up = orch_env.run("up", "v", "--skip-memory-check")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"\n{up.stdout}")
        found = re.findall(
            r"warm-up \d: TTFT (\d+) ms, prompt [\d.]+ tok/s \((\d+) tok\), "
            r"generation ([\d.]+) tok/s \((\d+) tok\) \[wall-clock\]",
            up.stdout,
        )
        assert len(found) == 2, up.stdout
        for ttft_ms, prompt, gen_tps, completion in found:
            assert TTFT_S * 1000 <= int(ttft_ms) < (TTFT_S + (MAX_TOKENS - 1) * TOKEN_S / 2) * 1000
            assert int(completion) == MAX_TOKENS and int(prompt) > 10
            assert float(gen_tps) <= 1.02 / TOKEN_S
    finally:
        assert orch_env.run("down", "v").returncode == 0
