"""Readiness polling against real local HTTP servers, and log-tail classification."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator import health
from orchestrator.errors import LaunchError
from tests.conftest import free_port


class _Server:
    def __init__(self, ready_after_s: float) -> None:
        self.ready_at = time.monotonic() + ready_after_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                code = 200 if time.monotonic() >= outer.ready_at else 503
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def loading_server() -> Iterator[_Server]:
    server = _Server(ready_after_s=0.3)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_ready_noticed_quickly(loading_server: _Server) -> None:
    statuses: list[int | None] = []
    ready = health.wait_ready(
        loading_server.endpoint,
        deadline_s=5,
        alive=lambda: True,
        log_tail=lambda n: [],
        on_poll=lambda t, s: statuses.append(s),
    )
    assert 503 in statuses and statuses[-1] == 200
    # Ready at 0.3 s; the back-off may add at most one delay of ~0.16 s at that point.
    assert 0.3 <= ready.seconds < 0.5


def test_refused_then_dead_is_reported_with_cause() -> None:
    port = free_port()
    checks = iter([True, True, False])
    with pytest.raises(LaunchError) as exc:
        health.wait_ready(
            f"http://127.0.0.1:{port}",
            deadline_s=5,
            alive=lambda: next(checks),
            log_tail=lambda n: [
                "loading",
                "ggml_backend_cuda_buffer_type_alloc_buffer: "
                "allocating 9000 MiB on device 0: cudaMalloc failed: out of memory",
            ],
            exit_code=lambda: 1,
        )
    text = str(exc.value)
    assert "engine exited with status 1 while loading" in text
    assert "cause: out of memory" in text and "fix:" in text
    assert "cudaMalloc failed" in text


def test_deadline(loading_server: _Server) -> None:
    loading_server.ready_at = time.monotonic() + 60
    start = time.monotonic()
    with pytest.raises(LaunchError, match=r"not ready after 0.4 s \(last /health: HTTP 503\)"):
        health.wait_ready(
            loading_server.endpoint, deadline_s=0.4, alive=lambda: True, log_tail=lambda n: []
        )
    assert time.monotonic() - start < 1.5


def test_served_name_awaited(loading_server: _Server) -> None:
    # /health says 200 at once but /v1/models never lists the name → deadline
    loading_server.ready_at = 0
    with pytest.raises(LaunchError, match="not ready after"):
        health.wait_ready(
            loading_server.endpoint,
            deadline_s=0.3,
            alive=lambda: True,
            log_tail=lambda n: [],
            served_name="tiny",
        )


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("CUDA error: out of memory", "out of memory"),
        ("terminate called after throwing an instance of 'std::bad_alloc'", "out of memory"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate", "out of memory"),
        (
            "couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080",
            "address already in use",
        ),
        ("OSError: [Errno 98] Address already in use", "address already in use"),
        (
            'error while handling argument "--rope-scaling": invalid value',
            "unknown or invalid argument",
        ),
        ("error: unknown argument: --bogus", "unknown or invalid argument"),
        ("vllm: error: unrecognized arguments: --bogus", "unknown or invalid argument"),
        (
            "llama_model_load: error loading model: tensor data is not within the file bounds",
            "model file missing or unloadable",
        ),
        (
            "gguf_init_from_file: failed to open GGUF file '/models/x.gguf'",
            "model file missing or unloadable",
        ),
        ("Error: localhost/x:1: image not known", "image not found"),
        (
            "Error: initializing source docker://x:latest: pinging container registry",
            "image not found",
        ),
    ],
)
def test_classify(line: str, cause: str) -> None:
    found = health.classify(["some noise", line, "more noise"])
    assert found is not None and found.name == cause


def test_classify_unknown() -> None:
    assert health.classify(["all fine", "then it stopped"]) is None
    text = health.explain("engine exited", ["a", "b"])
    assert "cause:" not in text and "last log lines:\n    a\n    b" in text


def test_probe_nothing_listening() -> None:
    assert health.probe(f"http://127.0.0.1:{free_port()}") is None
