"""What `orch serve` adds over talking to llama-server directly, and what a swap costs.

Loopback only, bounded in count and time. Run: .venv/bin/python -m benchmarks.bench_gateway
(needs the CPU llama-server: ORCH_TEST_LLAMA_SERVER or scripts/build-llama-server.sh).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
STREAMS = 60
THROUGHPUT_S = float(os.environ.get("BENCH_SECONDS", "6"))
ROUNDS = 12
"""Throughput alternates short direct and gateway rounds (THROUGHPUT_S / ROUNDS each) and
takes each side's median round: on a shared machine a burst of other work stalls the engine
for hundreds of ms, and whichever side it hits would otherwise decide the comparison."""

# The engine gets one of this machine's two cores, as the shipped profiles leave cores free
# (13-14 threads on 16): given both, llama.cpp's worker threads spin-wait on them between
# requests and starve the client and the gateway, and the direct figures alone swing from
# 14 to 215 requests/s from run to run (measured, one client).
PROFILE = """\
architecture = "synthetic-tiny-dense"
hardware = "{hardware}"
[model]
path = "{model}"
quant = "F16"
[engine]
kind = "llama.cpp"
binary = "{binary}"
ctx = 2048
parallel = 4
threads = 1
batch = 128
ubatch = 128
gpu_layers = 0
cache_ram_mib = 0
[runtime]
kind = "process"
[publish]
port = {port}
[warmup]
requests = 1
max_tokens = 4
"""
ONE_AT_A_TIME = """\
[cpu]
model = "generic"
physical_cores = 2
threads = 2
[memory]
ram_gib = 0.05
[budget]
ram_headroom_gib = 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BODY = {"model": "g", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


def call(port: int, body: dict[str, Any], conn: http.client.HTTPConnection | None = None) -> float:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    for attempt in (1, 2):
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps(body),
                {"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            break
        except (ConnectionError, http.client.HTTPException):
            # llama-server closes a keep-alive connection after 5 s idle (and after 100
            # requests); any HTTP client opens a new one then, and so does this one
            conn.close()
            if attempt == 2:
                raise
    took = time.perf_counter() - start
    assert response.status == 200, response.status
    if own:
        conn.close()
    return took


def ttft(port: int, model: str = "g") -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {**BODY, "model": model, "stream": True, "max_tokens": 8}
    start = time.perf_counter()
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    first = None
    while True:
        line = response.readline()
        if not line:
            break
        if first is None and line.startswith(b"data: ") and b'"content"' in line:
            first = time.perf_counter() - start
    conn.close()
    assert first is not None
    return first


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def throughput_round(
    conns: list[http.client.HTTPConnection], port: int, seconds: float
) -> tuple[int, float]:
    """Requests completed by len(conns) clients in about ``seconds``, and the seconds taken.

    The clock stops when the last client's last request is answered, so a slow tail counts.
    """
    done = [0] * len(conns)
    start = time.perf_counter()
    stop = start + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            call(port, BODY, conns[i])
            done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), time.perf_counter() - start


def throughput(direct_port: int, gw_port: int, clients: int) -> tuple[float, float]:
    """Requests per second direct and via the gateway: the median of alternating rounds."""
    conns = {
        p: [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for _ in range(clients)]
        for p in (direct_port, gw_port)
    }
    rates: dict[int, list[float]] = {direct_port: [], gw_port: []}
    for r in range(ROUNDS):
        order = (direct_port, gw_port) if r % 2 == 0 else (gw_port, direct_port)
        for port in order:
            n, took = throughput_round(conns[port], port, THROUGHPUT_S / ROUNDS)
            rates[port].append(n / took)
    for group in conns.values():
        for conn in group:
            conn.close()
    return statistics.median(rates[direct_port]), statistics.median(rates[gw_port])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/orch/status")
    data: dict[str, Any] = json.loads(conn.getresponse().read())
    conn.close()
    return data


def main() -> int:
    binary = (
        os.environ.get("ORCH_TEST_LLAMA_SERVER")
        or subprocess.run(
            [str(REPO / "scripts" / "build-llama-server.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
    )
    root = Path(tempfile.mkdtemp(prefix="orch-bench-gw-"))
    from orchestrator.synthetic import SPECS, write_gguf

    model = write_gguf(SPECS["tiny-dense"], root / "tiny.gguf")
    profiles = root / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    (profiles / "hardware" / "one-at-a-time.toml").write_text(ONE_AT_A_TIME)
    engine_port = free_port()
    for name, hw, port in (
        ("g", "small-cpu", engine_port),
        ("s1", "one-at-a-time", free_port()),
        ("s2", "one-at-a-time", free_port()),
    ):
        (profiles / "models" / f"{name}.toml").write_text(
            PROFILE.format(hardware=hw, model=model, binary=binary, port=port)
        )
    env = {
        **os.environ,
        "ORCH_PROFILES_DIR": str(profiles),
        "ORCH_TEMPLATES_DIR": str(REPO / "templates"),
        "ORCH_STATE_DIR": str(root / "state"),
        "ORCH_CONFIG": str(root / "none.toml"),
    }
    gw_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "g", "s1", "s2", "--port", str(gw_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status(gw_port)
                break
            except OSError:
                time.sleep(0.05)
        call(gw_port, BODY)  # loads g
        for _ in range(20):
            call(engine_port, BODY)
            call(gw_port, BODY)
        direct: list[float] = []
        via: list[float] = []
        dconn = http.client.HTTPConnection("127.0.0.1", engine_port, timeout=60)
        gconn = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=60)
        gateway_cpu = 0.0
        for _ in range(REQUESTS):  # interleaved, so drift hits both alike
            direct.append(call(engine_port, BODY, dconn))
            before = cpu_seconds(proc.pid)
            via.append(call(gw_port, BODY, gconn))
            gateway_cpu += cpu_seconds(proc.pid) - before
        print(f"non-streamed, {REQUESTS} requests each, keep-alive, max_tokens 4:")
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            d, g = pct(direct, q), pct(via, q)
            print(
                f"  {label}: direct {d * 1000:.2f} ms, via orch serve {g * 1000:.2f} ms, added {(g - d) * 1000:+.2f} ms"
            )
        print(
            f"  gateway CPU (user + system) per proxied request: {gateway_cpu / REQUESTS * 1000:.2f} ms"
        )
        dt: list[float] = []
        gt: list[float] = []
        for _ in range(STREAMS):
            dt.append(ttft(engine_port))
            gt.append(ttft(gw_port))
        d, g = statistics.median(dt), statistics.median(gt)
        print(
            f"streamed TTFT, {STREAMS} each, median: direct {d * 1000:.2f} ms, via orch serve {g * 1000:.2f} ms, added {(g - d) * 1000:+.2f} ms"
        )
        print(
            f"throughput, {THROUGHPUT_S:g} s per side, median of {ROUNDS} alternating rounds (requests/s; engine has 4 slots):"
        )
        for clients in (1, 4, 16):
            d, g = throughput(engine_port, gw_port, clients)
            print(
                f"  {clients:2d} clients: direct {d:.1f}, via orch serve {g:.1f} ({g / d * 100:.1f} % of direct)"
            )
        print("swap (s1 and s2 cannot run together): request for the unloaded one -> first token")
        call(gw_port, {**BODY, "model": "s1"})
        for run in range(3):
            target = "s2" if run % 2 == 0 else "s1"
            start = time.perf_counter()
            first = ttft(gw_port, target)
            total = time.perf_counter() - start
            marks = next(m for m in status(gw_port)["models"] if m["name"] == target)["last_load"]
            engine = marks.get("launched_to_ready_s", 0) + marks.get("warming_to_warm_s", 0)
            stop_s = marks.get("request_to_load_s", 0)
            orch = (
                marks.get("load_to_launched_s", 0)
                + marks.get("ready_to_warming_s", 0)
                + marks.get("warm_to_grant_s", 0)
            )
            print(
                f"  {target}: first token after {first * 1000:.0f} ms: stopping the other {stop_s * 1000:.0f} ms, "
                f"engine load + warm-up {engine * 1000:.0f} ms, orch (plan/preflight/launch, hand-over) {orch * 1000:.0f} ms, "
                f"rest (proxy + first token) {(first - stop_s - engine - orch) * 1000:.0f} ms [{total:.2f} s]"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
