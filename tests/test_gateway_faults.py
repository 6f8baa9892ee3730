"""`orch serve` faults and policies end to end, with the real llama-server.

SIGTERM drains; `orch up`'s instances are stopped to make room only when served;
priority beats recency; a real slow load (tests/throttle) shows its progress in
`orch up` (lines and sd_notify) and in the gateway's JSON; a killed gateway's orphans
are adopted or cleaned at the next start.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import OrchEnv, free_port
from tests.test_gateway_serve import (
    TINY_RAM,
    Gateway,
    _engines_on,
    _profile,
    _slow_profile,
    _start,
)


def _config(orch: OrchEnv, text: str) -> None:
    path = orch.root / "orch.toml"
    path.write_text(text)
    orch.env["ORCH_CONFIG"] = str(path)


def _pid(orch: OrchEnv, name: str) -> int:
    record = orch.record(name)
    assert record is not None, f"no record for {name}"
    return int(str(record["pid"]))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _models(gw: Gateway) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in gw.status()["models"]}


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_in_flight_refuses_new_and_stops_everything(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, throttle_so: Path
) -> None:
    hw = "small-cpu"
    ports = {
        "long": _profile(orch_env, "long", llama_server_binary, tiny_gguf, ctx=8192, hardware=hw),
        "idle": _profile(orch_env, "idle", llama_server_binary, tiny_gguf, hardware=hw),
        "slow": _slow_profile(
            orch_env,
            "slow",
            llama_server_binary,
            tiny_gguf,
            throttle_so,
            read_bps=20_000,
            hardware=hw,
        ),
    }
    # generous: 6000 tokens took from 2 s to over 60 s here, depending on the other load
    _config(orch_env, "[serve]\ndrain_grace_s = 300\n")
    gw = _start(orch_env, list(ports), ports)
    assert gw.chat("idle")[0] == 200
    assert gw.chat("long", max_tokens=2)[0] == 200
    engines = {name: _pid(orch_env, name) for name in ("idle", "long")}

    box: dict[str, Any] = {}

    def long_request() -> None:
        body = {"model": "long", "messages": [{"role": "user", "content": "count"}]}
        status, _, data = gw.request(
            "POST",
            "/v1/chat/completions",
            {**body, "max_tokens": 6000, "ignore_eos": True},
            timeout=400,
        )
        box["long"] = (status, json.loads(data))
        box["long_done"] = time.monotonic()

    def slow_request() -> None:
        box["slow"] = gw.chat("slow")
        box["slow_done"] = time.monotonic()

    threads = [threading.Thread(target=long_request), threading.Thread(target=slow_request)]
    for t in threads:
        t.start()
    _wait_for(
        lambda: (m := _models(gw))["long"]["in_flight"] == 1 and m["slow"]["state"] == "loading",
        "long in flight while slow loads",
    )
    _wait_for(lambda: orch_env.record("slow") is not None, "slow's engine launched")
    engines["slow"] = _pid(orch_env, "slow")

    sigterm = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: _refused(gw.port), "new connections refused")
    refused_at = time.monotonic()
    _wait_for(lambda: _gone(engines["slow"]), "the loading engine stopped", timeout=15)
    slow_stopped_at = time.monotonic()
    threads[1].join(timeout=30)
    code, body = box["slow"]
    assert code == 503 and body["error"]["code"] == "shutting_down", body
    assert "long_done" not in box, "the long request ended before the drain could be seen"

    threads[0].join(timeout=400)
    code, body = box["long"]
    assert code == 200, body  # finished, not cut off
    assert body["usage"]["completion_tokens"] == 6000
    out, err = gw.proc.communicate(timeout=90)
    exited = time.monotonic()
    assert gw.proc.returncode == 0, out + err
    assert refused_at < box["long_done"] and slow_stopped_at < box["long_done"]
    assert exited - box["long_done"] < 15, "instances were not stopped promptly after the drain"
    assert exited - sigterm < 300 + 15  # drain_grace_s, then the stops
    assert all(_gone(pid) for pid in engines.values())
    assert not _engines_on(list(ports.values()))
    assert not list((orch_env.state / "run").glob("*.json"))
    print(
        f"\n[measured] SIGTERM -> refused {refused_at - sigterm:.2f} s, loading engine "
        f"stopped {slow_stopped_at - sigterm:.2f} s, in-flight request done "
        f"{box['long_done'] - sigterm:.2f} s, exit {exited - sigterm:.2f} s"
    )


def test_drain_grace_cuts_what_is_left_and_stops_within_it(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    ports = {
        "long": _profile(
            orch_env, "long", llama_server_binary, tiny_gguf, ctx=8192, hardware="small-cpu"
        )
    }
    _config(orch_env, "[serve]\ndrain_grace_s = 1\n")
    gw = _start(orch_env, ["long"], ports)
    assert gw.chat("long", max_tokens=2)[0] == 200
    engine = _pid(orch_env, "long")
    box: dict[str, Any] = {}
    results: list[int] = []

    def long_request() -> None:
        box["first"] = gw.chat("long", max_tokens=8000, ignore_eos=True)

    def queued_request() -> None:
        results.append(gw.chat("long", max_tokens=8000, ignore_eos=True)[0])

    threads = [threading.Thread(target=long_request), threading.Thread(target=queued_request)]
    for t in threads:
        t.start()
    _wait_for(lambda: _models(gw)["long"]["queued"] == 1, "one running, one queued")
    sigterm = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    out, err = gw.proc.communicate(timeout=60)
    exited = time.monotonic()
    for t in threads:
        t.join(timeout=60)
    assert gw.proc.returncode == 0, out + err
    assert exited - sigterm < 1 + 10, f"{exited - sigterm:.1f} s"  # the grace, then the stop
    assert _gone(engine)
    code, body = box["first"]
    assert code == 503 and body["error"]["code"] == "shutting_down", body
    assert "past its drain grace" in body["error"]["message"]
    assert results == [503]
    assert "Exception in ASGI application" not in err


def test_orch_up_instances_stopped_for_room_only_when_served(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    """RAM holds two small instances. `a` (served) and `x` (not) were started by `orch up`."""
    (orch_env.profiles / "hardware" / "tiny-ram.toml").write_text(TINY_RAM)
    ports = {
        "a": _profile(orch_env, "a", llama_server_binary, tiny_gguf),
        "b": _profile(orch_env, "b", llama_server_binary, tiny_gguf),
        "c": _profile(orch_env, "c", llama_server_binary, tiny_gguf, ctx=8192),
        "x": _profile(orch_env, "x", llama_server_binary, tiny_gguf),
    }
    for name in ("a", "x"):
        up = orch_env.run("up", name)
        assert up.returncode == 0, up.stdout + up.stderr
    a, x = _pid(orch_env, "a"), _pid(orch_env, "x")
    _config(orch_env, "[serve]\nmax_wait_s = 3\n")
    gw = _start(orch_env, ["a", "b", "c"], ports)
    try:
        models = _models(gw)
        assert models["a"]["state"] == "ready" and models["a"]["owner"] == "up"  # adopted
        assert [e["name"] for e in gw.status()["external"]] == ["x"]

        # b fits only if one of a and x stops: a is served, so it may; x is not
        status, body = gw.chat("b")
        assert status == 200, body
        _wait_for(lambda: _gone(a), "a stopped")
        assert orch_env.record("a") is None and not _gone(x)
        assert _models(gw)["a"]["state"] == "stopped"

        # c does not fit beside x even with b stopped: it waits, then 503 naming x
        status, body = gw.chat("c")
        assert status == 503, body
        assert body["error"]["code"] == "timeout_waiting_for_room"
        assert "x (started by orch up)" in body["error"]["message"]
        assert _models(gw)["b"]["state"] == "ready"  # nothing was stopped in vain
        assert not _gone(x)
    finally:
        code, out, err = gw.stop()
    assert code == 0, out + err
    assert not _gone(x) and orch_env.record("x") is not None  # orch up's, not the gateway's
    assert orch_env.run("down", "x").returncode == 0


def test_priority_decides_before_recency(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    """Two fit: `hi` (priority 10) is the least recently used, yet `lo` makes room."""
    (orch_env.profiles / "hardware" / "tiny-ram.toml").write_text(TINY_RAM)
    ports = {n: _profile(orch_env, n, llama_server_binary, tiny_gguf) for n in ("hi", "lo", "new")}
    _config(orch_env, "[serve]\n[serve.profiles.hi]\npriority = 10\n")
    gw = _start(orch_env, list(ports), ports)
    try:
        assert gw.chat("hi")[0] == 200
        assert gw.chat("lo")[0] == 200
        assert gw.chat("new")[0] == 200
        states = {n: m["state"] for n, m in _models(gw).items()}
        assert states == {"hi": "ready", "lo": "stopped", "new": "ready"}
        # with equal priorities, recency decides: hi is now the least recently used
        code, _, data = gw.request("GET", "/metrics")
        assert 'orch_stops_total{model="lo",reason="evict"} 1' in data.decode()
        assert gw.chat("lo")[0] == 200
        states = {n: m["state"] for n, m in _models(gw).items()}
        assert states == {"hi": "ready", "lo": "ready", "new": "stopped"}
    finally:
        code, out, err = gw.stop()
    assert code == 0, out + err


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def test_real_slow_load_shows_progress(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, throttle_so: Path, tmp_path: Path
) -> None:
    """About 15 s to read 1.4 MiB: `orch up` prints progress lines and tells systemd."""
    _slow_profile(
        orch_env,
        "slow",
        llama_server_binary,
        tiny_gguf,
        throttle_so,
        read_bps=100_000,
        hardware="small-cpu",
    )
    notify = _notify_socket(tmp_path / "notify.sock")
    env = {**orch_env.env, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "up", "slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=orch_env.root,
    )
    messages: list[str] = []
    while proc.poll() is None:
        try:
            messages.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
    out, err = proc.communicate()
    notify.close()
    assert proc.returncode == 0, out + err
    lines = [line for line in out.splitlines() if line.startswith("slow: loading weights ")]
    assert len(lines) >= 2, out  # a plain line every 5 s on a pipe
    percents = [int(line.split("(")[1].split("%")[0]) for line in lines]
    assert percents == sorted(percents) and percents[0] < 100, lines
    assert any("KiB/s" in line and "ETA" in line for line in lines), lines
    statuses = [m for m in messages if m.startswith("STATUS=slow: loading weights ")]
    assert len(statuses) >= 3, messages
    assert "EXTEND_TIMEOUT_USEC=60000000" in messages
    assert messages[-1] == "READY=1" or "READY=1" in messages
    assert orch_env.run("down", "slow").returncode == 0


def test_gateway_json_follows_a_real_slow_load(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, throttle_so: Path
) -> None:
    ports = {
        "slow": _slow_profile(
            orch_env,
            "slow",
            llama_server_binary,
            tiny_gguf,
            throttle_so,
            read_bps=100_000,
            hardware="small-cpu",
        )
    }
    gw = _start(orch_env, ["slow"], ports)
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.setdefault("answer", gw.chat("slow")))
    t.start()
    samples = []
    try:
        while t.is_alive():
            m = _models(gw)["slow"]
            if m["state"] == "loading" and m["progress"]:
                samples.append(m["progress"])
            time.sleep(0.5)
        t.join()
        assert box["answer"][0] == 200
    finally:
        code, out, err = gw.stop()
    assert code == 0, out + err
    loaded = [s["loaded_bytes"] for s in samples]
    assert len(set(loaded)) >= 4, samples  # it moved, step by step
    assert loaded == sorted(loaded) and 0 < samples[0]["fraction"] < 0.5
    rates = [s["rate_bytes_s"] for s in samples if s["rate_bytes_s"]]
    assert rates and 30_000 < sorted(rates)[len(rates) // 2] < 400_000  # held near 100 KB/s
    assert any(s["eta_s"] and s["eta_s"] > 1 for s in samples)


def test_killed_gateway_orphans_adopted_restarted_or_cleared(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    """Same plan: adopted. Changed plan: stopped, started anew on demand. Dead: cleared."""
    hw = "small-cpu"
    ports = {n: _profile(orch_env, n, llama_server_binary, tiny_gguf, hardware=hw) for n in "abc"}
    gw = _start(orch_env, list(ports), ports)
    for name in ports:
        assert gw.chat(name)[0] == 200
    pids = {name: _pid(orch_env, name) for name in ports}
    gw.proc.kill()
    gw.proc.wait()
    assert not any(_gone(pid) for pid in pids.values())  # orphans, still running

    text = (orch_env.profiles / "models" / "b.toml").read_text()
    orch_env.write_profile("b", text.replace("batch = 128", "batch = 64"))  # a new plan
    psutil.Process(pids["c"]).kill()  # died while no gateway watched
    _wait_for(lambda: _gone(pids["c"]), "c dead")

    again = _start(orch_env, list(ports), ports)
    try:
        models = _models(again)
        assert {n: m["state"] for n, m in models.items()} == {
            "a": "ready",
            "b": "stopped",
            "c": "stopped",
        }
        assert _pid(orch_env, "a") == pids["a"]  # adopted as it was
        assert (orch_env.record("a") or {})["gateway_pid"] == again.proc.pid
        assert _gone(pids["b"]) and orch_env.record("b") is None  # not the plan it serves now
        assert orch_env.record("c") is None  # its record cleared
        assert again.chat("b")[0] == 200 and _pid(orch_env, "b") != pids["b"]
        assert again.chat("c")[0] == 200
    finally:
        code, out, err = again.stop()
    assert code == 0, out + err
    assert all(_gone(pid) for pid in pids.values())
    assert not _engines_on(list(ports.values()))


def test_second_gateway_refused_and_first_untouched(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    ports = {"a": _profile(orch_env, "a", llama_server_binary, tiny_gguf, hardware="small-cpu")}
    gw = _start(orch_env, ["a"], ports)
    try:
        assert gw.chat("a")[0] == 200
        engine = _pid(orch_env, "a")
        cases = [
            (
                {},
                ["--port", str(free_port())],
                f"orch: error: another orch serve (pid {gw.proc.pid}) already uses the state "
                f"folder {orch_env.state}; stop it first, or give this one its own "
                "ORCH_STATE_DIR",
            ),
            (
                {"ORCH_STATE_DIR": str(orch_env.root / "state2")},
                ["--port", str(gw.port)],
                f"orch: error: cannot listen on 127.0.0.1:{gw.port}: Address already in use "
                "(another orch serve? pass --port or set [serve].port)",
            ),
        ]
        for env, args, message in cases:
            done = subprocess.run(
                [sys.executable, "-m", "orchestrator", "serve", "a", *args],
                capture_output=True,
                text=True,
                env={**orch_env.env, **env},
                cwd=orch_env.root,
                timeout=60,
            )
            assert done.returncode == 4, done.stdout + done.stderr
            assert done.stderr.strip() == message
            assert gw.chat("a")[0] == 200 and _pid(orch_env, "a") == engine  # untouched
        assert not (orch_env.root / "state2" / "run").exists() or not list(
            (orch_env.root / "state2" / "run").glob("*.json")
        )
    finally:
        code, out, err = gw.stop()
    assert code == 0, out + err
