#!/usr/bin/env python3
"""A stand-in for `vllm serve` that behaves like its start-up and its streams on the wire.

`fake_vllm.py serve MODEL --host H --port P [--served-model-name N] [...]`:
the port is not bound for --delay seconds (default 1; connection refused, as
while vLLM loads), then /health answers 200, /version gives a version, /v1/models lists the served name
and /v1/chat/completions answers with usage (no llama.cpp timings).

Streaming (`"stream": true`) follows vLLM's OpenAI server: HTTP/1.1 chunked
`text/event-stream`, headers sent at once; after the time to first token one
`data: {...}` chunk with `delta: {role: assistant, content: ""}` and then one
chunk per token (`delta: {content}`, the last with finish_reason), a final
chunk with `choices: []` and `usage` only when `stream_options.include_usage`
is set, then `data: [DONE]`.

Environment:
  FAKE_VLLM_MODE=always-503  bind at once and answer 503 forever.
  FAKE_VLLM_TTFT_S           seconds before the first token (default 0.01).
  FAKE_VLLM_TOKEN_S          seconds between tokens (default 0.001).
Prompt tokens are the words of all messages plus 10 (the chat template's share).
Unknown vLLM flags are accepted and ignored. SIGTERM exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEMPLATE_TOKENS = 10
FAKE_VERSION = "0.33.0+fake"
"""What ``GET /version`` answers, shaped like vLLM's ``{"version": ...}``."""


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Words in the messages plus the chat template's share."""
    return TEMPLATE_TOKENS + sum(len(str(m.get("content", "")).split()) for m in messages)


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args and args[0] == "serve":
        args = args[1:]
    model = args[0] if args and not args[0].startswith("-") else "model"
    opts: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                opts[a] = args[i + 1]
                i += 2
                continue
            flags.add(a)
        i += 1
    served = opts.get("--served-model-name", model)
    always_503 = os.environ.get("FAKE_VLLM_MODE") == "always-503"
    ttft_s = float(os.environ.get("FAKE_VLLM_TTFT_S", "0.01"))
    token_s = float(os.environ.get("FAKE_VLLM_TOKEN_S", "0.001"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"fake vllm: loading {model}", flush=True)
    if not always_503:
        time.sleep(float(opts.get("--delay", "1")))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *a: object) -> None:
            print("fake vllm:", fmt % a, flush=True)

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _event(self, body: object) -> None:
            text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
            self._chunk(f"data: {text}\n\n".encode())

        def do_GET(self) -> None:  # noqa: N802
            if always_503:
                self._send(503, {"error": "loading"})
            elif self.path == "/health":
                self._send(200, {})
            elif self.path == "/version":
                self._send(200, {"version": FAKE_VERSION})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": served, "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions" or always_503:
                self._send(404, {"error": "not found"})
                return
            if body.get("model") != served:
                self._send(404, {"error": f"model {body.get('model')!r} does not exist"})
                return
            n = int(body.get("max_tokens", 16))
            usage = {
                "prompt_tokens": prompt_tokens(body.get("messages") or []),
                "completion_tokens": n,
            }
            usage["total_tokens"] = usage["prompt_tokens"] + n
            if body.get("stream"):
                self._stream(
                    n, usage, bool((body.get("stream_options") or {}).get("include_usage"))
                )
                return
            time.sleep(ttft_s + token_s * n)
            self._send(
                200,
                {
                    "object": "chat.completion",
                    "model": served,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "hi " * n}}
                    ],
                    "usage": usage,
                },
            )

        def _stream(self, n: int, usage: dict[str, int], include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            head = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": served,
            }
            time.sleep(ttft_s)
            # vLLM sends the role chunk when the first output arrives, then that token.
            self._event(
                {
                    **head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
            for k in range(n):
                if k:
                    time.sleep(token_s)
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": "hi "},
                    "logprobs": None,
                    "finish_reason": "length" if k == n - 1 else None,
                }
                if k == n - 1:
                    choice["stop_reason"] = None
                self._event({**head, "choices": [choice]})
            if include_usage:
                self._event({**head, "choices": [], "usage": usage})
            self._event("[DONE]")
            self._chunk(b"")

    server = ThreadingHTTPServer((opts.get("--host", "127.0.0.1"), int(opts["--port"])), Handler)
    print(f"fake vllm: serving {served} on port {opts['--port']}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
