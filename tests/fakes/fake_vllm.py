#!/usr/bin/env python3
"""A stand-in for `vllm serve` that behaves like its start-up on the wire.

`fake_vllm.py serve MODEL --host H --port P [--served-model-name N] [...]`:
the port is not bound for --delay seconds (default 1; connection refused, as
while vLLM loads), then /health answers 200, /v1/models lists the served name
and /v1/chat/completions answers with usage (no llama.cpp timings).
FAKE_VLLM_MODE=always-503 in the environment: bind at once and answer 503 forever.
Unknown vLLM flags are accepted and ignored. SIGTERM exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"fake vllm: loading {model}", flush=True)
    if not always_503:
        time.sleep(float(opts.get("--delay", "1")))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            print("fake vllm:", fmt % a, flush=True)

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if always_503:
                self._send(503, {"error": "loading"})
            elif self.path == "/health":
                self._send(200, {})
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
            time.sleep(0.01)
            self._send(
                200,
                {
                    "object": "chat.completion",
                    "model": served,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "hi " * n}}
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": n, "total_tokens": 20 + n},
                },
            )

    server = ThreadingHTTPServer((opts.get("--host", "127.0.0.1"), int(opts["--port"])), Handler)
    print(f"fake vllm: serving {served} on port {opts['--port']}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
