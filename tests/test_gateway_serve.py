"""`orch serve` with the real CPU llama-server: the issue's "Must show" scenario and faults."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import OrchEnv, free_port

TINY_RAM = """\
description = "test: host RAM for two tiny instances, not for the long-context one beside either"
[cpu]
model = "generic"
physical_cores = 2
threads = 2
[memory]
ram_gib = 0.054
[budget]
ram_headroom_gib = 0
"""


@dataclass
class Gateway:
    proc: subprocess.Popen[str]
    port: int
    ports: dict[str, int]
    orch: OrchEnv

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 120
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = body if isinstance(body, bytes) else None
            if body is not None and payload is None:
                payload = json.dumps(body).encode()
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def chat(self, model: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            **extra,
        }
        status, _, data = self.request("POST", "/v1/chat/completions", body)
        return status, json.loads(data)

    def status(self) -> dict[str, Any]:
        code, _, data = self.request("GET", "/orch/status")
        assert code == 200
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    def states(self) -> dict[str, str]:
        return {m["name"]: m["state"] for m in self.status()["models"]}

    def stop(self, timeout: float = 60) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def _engines_on(ports: list[int]) -> list[int]:
    out = []
    wanted = {str(p) for p in ports}
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and "--port" in cmd:
            if cmd[cmd.index("--port") + 1 :][:1] and cmd[cmd.index("--port") + 1] in wanted:
                out.append(proc.pid)
    return out


def _wait_listening(proc: subprocess.Popen[str], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"orch serve exited {proc.returncode}: {proc.communicate()}")
        # the socket is bound before start-up; /health answers once the gateway serves
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("orch serve did not listen")


def _profile(
    orch: OrchEnv,
    name: str,
    binary: Path,
    model: Path,
    *,
    ctx: int = 512,
    hardware: str = "tiny-ram",
    extra: str = "",
) -> int:
    port = free_port()
    path = orch.llama_profile(name, model=model, binary=binary, port=port, warmup=1)
    text = path.read_text().replace('hardware = "small-cpu"', f'hardware = "{hardware}"')
    text = text.replace("ctx = 512", f"ctx = {ctx}")
    orch.write_profile(name, extra + text)
    return port


def _slow_profile(
    orch: OrchEnv,
    name: str,
    binary: Path,
    model: Path,
    throttle_so: Path,
    *,
    read_bps: int,
    hardware: str = "tiny-ram",
) -> int:
    """A profile whose engine reads its weights at ``read_bps`` (tests/throttle), no mmap."""
    port = _profile(orch, name, binary, model, hardware=hardware)
    text = (orch.profiles / "models" / f"{name}.toml").read_text()
    text = text.replace("cache_ram_mib = 0\n", 'cache_ram_mib = 0\nload_mode = "no-mmap"\n')
    text = text.replace(
        'kind = "process"\n',
        f'kind = "process"\nenv = {{ LD_PRELOAD = "{throttle_so}", '
        f'ORCH_TEST_READ_BPS = "{read_bps}" }}\n',
    )
    orch.write_profile(name, text)
    return port


def _start(orch: OrchEnv, names: list[str], ports: dict[str, int], *args: str) -> Gateway:
    port = free_port()
    proc = orch.popen("serve", *names, "--port", str(port), *args)
    _wait_listening(proc, port)
    return Gateway(proc, port, ports, orch)


@pytest.fixture
def abc(orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path) -> Iterator[Gateway]:
    (orch_env.profiles / "hardware" / "tiny-ram.toml").write_text(TINY_RAM)
    ports = {
        "a": _profile(orch_env, "a", llama_server_binary, tiny_gguf),
        "b": _profile(orch_env, "b", llama_server_binary, tiny_gguf),
        "c": _profile(orch_env, "c", llama_server_binary, tiny_gguf, ctx=8192),
    }
    gateway = _start(orch_env, ["a", "b", "c"], ports)
    yield gateway
    if gateway.proc.poll() is None:
        gateway.stop()


def test_must_show(abc: Gateway) -> None:
    gw = abc
    code, _, data = gw.request("GET", "/v1/models")
    assert code == 200
    assert [m["id"] for m in json.loads(data)["data"]] == ["a", "b", "c"]

    status, answer = gw.chat("a")
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"]
    status, answer = gw.chat("b")
    assert status == 200, answer
    assert gw.states() == {"a": "ready", "b": "ready", "c": "stopped"}  # they fit together

    status, answer = gw.chat("c")
    assert status == 200, answer
    assert gw.states() == {"a": "stopped", "b": "stopped", "c": "ready"}  # both made room
    assert not _engines_on([gw.ports["a"], gw.ports["b"]])

    results: list[tuple[str, int]] = []
    lock = threading.Lock()

    def one(model: str) -> None:
        code, body = gw.chat(model)
        with lock:
            results.append((model, code if body.get("choices") else -code))

    threads = [threading.Thread(target=one, args=(m,)) for m in "acacac"]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(timeout=180)
    assert sorted(results) == [("a", 200)] * 3 + [("c", 200)] * 3, results

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(
            {
                "model": "a",
                "stream": True,
                "max_tokens": 6,
                "messages": [{"role": "user", "content": "hi"}],
            }
        ),
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events = [line for line in response.read().decode().splitlines() if line.startswith("data: ")]
    conn.close()
    assert len(events) >= 3 and events[-1] == "data: [DONE]"

    code, _, data = gw.request("POST", "/v1/chat/completions", {"model": "nope", "messages": []})
    assert code == 404
    error = json.loads(data)["error"]
    assert error["code"] == "model_not_found" and "'nope'" in error["message"]
    assert error["type"] == "invalid_request_error"

    code, headers, data = gw.request("GET", "/metrics")
    text = data.decode()
    assert code == 200
    assert 'orch_requests_total{model="a",code="200"}' in text
    assert 'orch_requests_total{model="c",code="200"}' in text
    assert 'orch_stops_total{model="a",reason="evict"}' in text
    assert "orch_memory_planned_bytes{model=" in text
    assert 'llamacpp:tokens_predicted_total{model="' in text  # the engines' own, labelled

    ps = gw.orch.run("ps")
    assert "orch serve (pid" in ps.stdout

    code, out, err = gw.stop()
    assert code == 0, out + err
    assert not _engines_on(list(gw.ports.values()))
    assert not list((gw.orch.state / "run").glob("*.json"))


def test_engine_dies_mid_request_then_restarts(abc: Gateway) -> None:
    assert abc.chat("a")[0] == 200
    pid = next(m for m in abc.status()["models"] if m["name"] == "a")
    record = abc.orch.record("a")
    assert record is not None and pid["state"] == "ready"
    engine = int(str(record["pid"]))
    box: dict[str, Any] = {}

    def long_request() -> None:
        box["result"] = abc.chat("a", max_tokens=100000, ignore_eos=True)

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        m["in_flight"] for m in abc.status()["models"] if m["name"] == "a"
    ):
        time.sleep(0.02)
    time.sleep(0.2)
    psutil.Process(engine).kill()
    t.join(timeout=60)
    status, body = box["result"]
    assert status in (200, 502), body  # headers may already be on their way
    if status == 502:
        assert body["error"]["code"] == "engine_died"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and abc.states()["a"] != "stopped":
        time.sleep(0.05)
    assert abc.states()["a"] == "stopped"
    assert abc.chat("a")[0] == 200  # started again on the next request
    new = abc.orch.record("a")
    assert new is not None and new["pid"] != engine


def test_client_disconnect_cancels_the_engine_request(abc: Gateway) -> None:
    assert abc.chat("a")[0] == 200
    endpoint_port = abc.ports["a"]
    sock = socket.create_connection(("127.0.0.1", abc.port))
    body = json.dumps(
        {
            "model": "a",
            "stream": True,
            "max_tokens": 100000,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": "count"}],
        }
    ).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    seen = b""
    while b"data: " not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    sock.close()
    deadline = time.monotonic() + 10
    busy = True
    while time.monotonic() < deadline and busy:
        conn = http.client.HTTPConnection("127.0.0.1", endpoint_port, timeout=5)
        conn.request("GET", "/slots")
        slots = json.loads(conn.getresponse().read())
        conn.close()
        busy = any(s.get("is_processing") for s in slots)
        time.sleep(0.05)
    assert not busy, "the engine kept generating for a client that left"
    assert abc.status()["models"][0]["in_flight"] == 0


def test_killed_gateway_orphans_not_served_are_stopped(abc: Gateway) -> None:
    assert abc.chat("b")[0] == 200
    engine = int(str((abc.orch.record("b") or {})["pid"]))
    abc.proc.kill()
    abc.proc.wait()
    again = _start(abc.orch, ["a"], abc.ports)
    try:
        assert abc.orch.record("b") is None
        deadline = time.monotonic() + 5
        while psutil.pid_exists(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _engines_on([abc.ports["b"]])
    finally:
        again.stop()


def test_queue_full_is_429_with_retry_after(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    (orch_env.profiles / "hardware" / "tiny-ram.toml").write_text(TINY_RAM)
    # 4K ctx: room for the 2,000 tokens each request generates (about a second here)
    ports = {"a": _profile(orch_env, "a", llama_server_binary, tiny_gguf, ctx=4096)}
    config = orch_env.root / "orch.toml"
    config.write_text("[serve]\nqueue_limit = 1\nretry_after_s = 3\n")
    orch_env.env["ORCH_CONFIG"] = str(config)
    gw = _start(orch_env, ["a"], ports)
    try:
        assert gw.chat("a")[0] == 200
        results: list[tuple[int, dict[str, str]]] = []

        def one() -> None:
            code, headers, _ = gw.request(
                "POST",
                "/v1/chat/completions",
                {
                    "model": "a",
                    "max_tokens": 2000,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            results.append((code, headers))

        def model_a() -> dict[str, Any]:
            return next(m for m in gw.status()["models"] if m["name"] == "a")

        def wait_until(ready: Callable[[dict[str, Any]], bool]) -> None:
            deadline = time.monotonic() + 60
            while not ready(model_a()):
                assert time.monotonic() < deadline, gw.status()
                time.sleep(0.01)

        # the next request goes only once the one before runs (then waits): with a fixed pause
        # and 512 ctx, the first finished before the third arrived on an idle machine
        threads = [threading.Thread(target=one) for _ in range(3)]
        threads[0].start()
        wait_until(lambda m: m["in_flight"] == 1)
        threads[1].start()
        wait_until(lambda m: m["queued"] == 1)
        threads[2].start()
        for t in threads:
            t.join(timeout=120)
        codes = sorted(c for c, _ in results)
        assert codes == [200, 200, 429], codes  # one runs, one waits, one is refused
        refused = next(h for c, h in results if c == 429)
        assert {k.lower(): v for k, v in refused.items()}.get("retry-after") == "3"
    finally:
        gw.stop()


def test_aliases_idle_ttl_and_load_unload(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    (orch_env.profiles / "hardware" / "tiny-ram.toml").write_text(TINY_RAM)
    ports = {n: _profile(orch_env, n, llama_server_binary, tiny_gguf) for n in ("a", "b")}
    config = orch_env.root / "orch.toml"
    config.write_text(
        '[serve]\nmodels = ["a", "b"]\n[serve.profiles.a]\nidle_ttl_s = 1\naliases = ["gpt-x"]\n'
    )
    orch_env.env["ORCH_CONFIG"] = str(config)
    port = free_port()
    proc = orch_env.popen("serve", "--port", str(port))
    _wait_listening(proc, port)
    gw = Gateway(proc, port, ports, orch_env)
    try:
        status, body = gw.chat("gpt-x")
        assert status == 200, body
        assert gw.states()["a"] == "ready"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and gw.states()["a"] != "stopped":
            time.sleep(0.1)
        assert gw.states()["a"] == "stopped"  # its idle TTL passed
        code, _, _ = gw.request("POST", "/orch/load/b")
        assert code == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and gw.states()["b"] != "ready":
            time.sleep(0.05)
        assert gw.states()["b"] == "ready"
        code, _, _ = gw.request("POST", "/orch/unload/b")
        assert code == 202
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and gw.states()["b"] != "stopped":
            time.sleep(0.05)
        assert gw.states()["b"] == "stopped"
    finally:
        gw.stop()


def test_error_codes(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, throttle_so: Path
) -> None:
    """Each failure a client can meet, with its HTTP code and OpenAI error code (README)."""
    (orch_env.profiles / "hardware" / "tiny-ram.toml").write_text(TINY_RAM)
    ports = {
        "huge": _profile(orch_env, "huge", llama_server_binary, tiny_gguf, ctx=65536),
        "bad": _profile(orch_env, "bad", llama_server_binary, tiny_gguf),
        "nofile": _profile(orch_env, "nofile", llama_server_binary, orch_env.root / "gone.gguf"),
        "slow": _slow_profile(
            orch_env, "slow", llama_server_binary, tiny_gguf, throttle_so, read_bps=50_000
        ),
    }
    text = (orch_env.profiles / "models" / "bad.toml").read_text()
    orch_env.write_profile(
        "bad", text.replace("extra_args = []", 'extra_args = ["--rope-scaling", "bogus"]')
    )
    slow = (orch_env.profiles / "models" / "slow.toml").read_text()
    orch_env.write_profile("slow", slow + "\n[health]\ntimeout_s = 2\n")
    gw = _start(orch_env, list(ports), ports)
    cases = [
        ("huge", 507, "model_does_not_fit", "does not fit tiny-ram"),
        ("bad", 502, "engine_failed", "invalid value"),
        ("slow", 504, "engine_timeout", "not ready after 2 s"),
        ("nofile", 503, "cannot_start_here", "model file missing"),
        ("nope", 404, "model_not_found", "'nope' does not exist here"),
    ]
    try:
        for model, code, error, text in cases:
            status, headers, data = gw.request(
                "POST",
                "/v1/chat/completions",
                {"model": model, "messages": [{"role": "user", "content": "hi"}]},
            )
            body = json.loads(data)
            assert (status, body["error"]["code"]) == (code, error), (model, body)
            assert text in body["error"]["message"], (model, body)
            kind = "invalid_request_error" if code < 500 else "server_error"
            assert body["error"]["type"] == kind
        assert not _engines_on([ports["bad"], ports["slow"]])  # failed starts leave nothing
        status, _, data = gw.request("POST", "/v1/chat/completions", b"{not json")
        assert status == 400 and json.loads(data)["error"]["code"] == "invalid_json"
    finally:
        gw.stop()


def test_any_gpu_placement_goes_where_there_is_room(orch_env: OrchEnv) -> None:
    """Two fake GPUs: an `orch up` instance holds GPU 0 whole, so `gpus = "any"` goes to 1."""
    from tests.test_lifecycle_process import _vllm_profile

    holder_port = free_port()
    holder = "needs_whole_gpu = true\ngpus = [0]\n" + _vllm_profile(holder_port).replace(
        'hardware = "epyc9175f-rtxpro6000"', 'hardware = "epyc9175f-2x-rtxpro6000"'
    )
    orch_env.write_profile("holder", holder)
    up = orch_env.run("up", "holder", "--skip-memory-check")
    assert up.returncode == 0, up.stdout + up.stderr
    anyp = 'gpus = "any"\n' + _vllm_profile(free_port(), served="any-served").replace(
        'hardware = "epyc9175f-rtxpro6000"', 'hardware = "epyc9175f-2x-rtxpro6000"'
    )
    orch_env.write_profile("anyg", anyp)
    gw = _start(orch_env, ["anyg"], {}, "--skip-memory-check")
    try:
        status, body = gw.chat("anyg")
        assert status == 200, body
        model = next(m for m in gw.status()["models"] if m["name"] == "anyg")
        assert model["placement"] == "CUDA1"
        pid = int(str((orch_env.record("anyg") or {})["pid"]))
        env = dict(
            item.decode().split("=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        assert env.get("CUDA_VISIBLE_DEVICES") == "1"
        assert any(e["name"] == "holder" for e in gw.status()["external"])
    finally:
        code, out, err = gw.stop()
    assert code == 0, out + err
    assert orch_env.record("holder") is not None  # orch up's instance is left alone
    assert orch_env.run("down", "holder").returncode == 0


NVML = Path(__file__).resolve().parent / "fakes" / "nvml"


def _fake_gpus(orch: OrchEnv, free_mib: tuple[int, int]) -> None:
    """Two 96 GB GPUs seen through the fake NVML, with ``free_mib`` free on each."""
    path = orch.root / "gpus.json"
    gpus = [
        {"name": "NVIDIA RTX PRO 6000", "total_mib": 97887, "free_mib": free, "processes": []}
        for free in free_mib
    ]
    path.write_text(json.dumps(gpus))
    orch.env["FAKE_NVML_GPUS"] = str(path)
    orch.env["PYTHONPATH"] = str(NVML)


def _visible_devices(pid: int) -> str | None:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(i.decode().split("=", 1) for i in raw if b"=" in i).get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize(("free_mib", "gpu"), [((20000, 95000), 1), ((95000, 20000), 0)])
def test_any_gpu_up_and_serve_place_by_live_free_memory(
    orch_env: OrchEnv, free_mib: tuple[int, int], gpu: int
) -> None:
    """Both budgets fit; something orch did not start holds most of one GPU (fake NVML)."""
    from tests.test_lifecycle_process import _vllm_profile

    _fake_gpus(orch_env, free_mib)
    text = 'gpus = "any"\n' + _vllm_profile(free_port(), served="any-served").replace(
        'hardware = "epyc9175f-rtxpro6000"', 'hardware = "epyc9175f-2x-rtxpro6000"'
    )
    orch_env.write_profile("anyg", text)

    up = orch_env.run("up", "anyg")  # the free memory check is on
    assert up.returncode == 0, up.stdout + up.stderr
    record = orch_env.record("anyg")
    assert record is not None and record["gpus"] == [gpu]
    assert _visible_devices(int(str(record["pid"]))) == str(gpu)
    again = orch_env.run("up", "anyg")  # it keeps its GPU, and is found running
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert orch_env.run("down", "anyg").returncode == 0

    gw = _start(orch_env, ["anyg"], {})
    try:
        status, body = gw.chat("anyg")
        assert status == 200, body
        model = next(m for m in gw.status()["models"] if m["name"] == "anyg")
        assert model["placement"] == f"CUDA{gpu}"
        served = orch_env.record("anyg")
        assert served is not None and _visible_devices(int(str(served["pid"]))) == str(gpu)
    finally:
        code, out, err = gw.stop()
    assert code == 0, out + err
