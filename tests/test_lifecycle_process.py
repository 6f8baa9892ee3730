"""`orch up/status/down/logs/bench` with the real CPU llama-server and a fake vLLM."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil

from orchestrator.health import served_names
from orchestrator.runtime.process import launch
from tests.conftest import FAKES, OrchEnv, free_port


def _pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _nothing_left(orch: OrchEnv, name: str, pid: int | None = None) -> None:
    assert orch.record(name) is None
    if pid is not None:
        deadline = time.monotonic() + 2
        while _pid_running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _pid_running(pid), f"engine pid {pid} still running"


def _engine_pids(binary: Path | str) -> set[int]:
    out = set()
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if cmd and str(binary) in cmd[0:2] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            out.add(proc.pid)
    return out


def _engines_on(port: int) -> list[int]:
    """Live processes with ``--port PORT`` in their command line: engines of this test only."""
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and "--port" in cmd:
            if cmd[cmd.index("--port") + 1 :][:1] == [str(port)]:
                out.append(proc.pid)
    return out


def test_up_status_bench_down(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    port = free_port()
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port)
    start = time.monotonic()
    up = orch_env.run("up", "t")
    took = time.monotonic() - start
    assert up.returncode == 0, up.stderr
    assert f"t: ready at http://127.0.0.1:{port}" in up.stdout
    assert "warm-up 2: TTFT" in up.stdout and "[timings]" in up.stdout
    # in-use memory is compared with the part of the plan resident right after start-up
    assert "memory: CPU RSS " in up.stdout and "weights + KV + process" in up.stdout
    print(f"\n[measured] process up (plan+launch+ready+warm-up): {took:.2f} s\n{up.stdout}")
    record = orch_env.record("t")
    assert record is not None and record["runtime"] == "process"
    pid = int(str(record["pid"]))
    assert _pid_running(pid)

    again = orch_env.run("up", "t")
    assert again.returncode == 0 and "already running" in again.stdout

    status = orch_env.run("status", "t", "--json")
    assert status.returncode == 0, status.stderr
    (data,) = json.loads(status.stdout)
    assert data["state"] == "running" and data["pid"] == pid and data["port"] == port
    assert data["figures"]["tokens_predicted_total"] >= 16
    assert data["figures"]["slots_total"] == 1
    assert served_names(data["endpoint"]) == ["t"]  # --alias: clients see the profile name

    ps = orch_env.run("ps")
    assert "t" in ps.stdout and "running" in ps.stdout

    logs = orch_env.run("logs", "t", "-n", "200")
    assert logs.returncode == 0 and "orch up t" in logs.stdout

    bench = orch_env.run("bench", "t", "--runs", "2", "--prompt-tokens", "32,128", "--json")
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert [r["requested_tokens"] for r in result["runs"]] == [32, 128]
    for row in result["runs"]:
        assert row["source"] == "timings" and row["pp_tps"] > 0 and row["tg_tps"] > 0
    print(f"[measured] bench: {bench.stdout}")

    start = time.monotonic()
    down = orch_env.run("down", "t")
    print(f"[measured] process down: {time.monotonic() - start:.2f} s ({down.stdout.strip()})")
    assert down.returncode == 0, down.stderr
    _nothing_left(orch_env, "t", pid)
    gone = orch_env.run("status", "t")
    assert gone.returncode == 6 and "not running" in gone.stderr
    # stopping what is stopped succeeds, as `systemctl stop` does (`make down` twice)
    again = orch_env.run("down", "t")
    assert (again.returncode, again.stdout, again.stderr) == (
        0,
        "t: not running; nothing to stop\n",
        "",
    )


def test_changed_profile_needs_replace(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    port = free_port()
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port, warmup=0)
    assert orch_env.run("up", "t").returncode == 0
    old_pid = int(str(orch_env.record("t")["pid"]))  # type: ignore[index]
    running = f"t is running (pid {old_pid}, started by orch up) at http://127.0.0.1:{port} with"
    # `orch plan` right after `orch up`: its own instance holds the port, which is no problem
    same = orch_env.run("plan", "t")
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"  note: {running} this plan (" in same.stdout
    assert "`orch up t` leaves it as it is" in same.stdout
    assert "cannot start here" not in same.stdout and "already in use" not in same.stdout
    (data,) = [json.loads(orch_env.run("plan", "t", "--json").stdout)]
    assert data["live_problems"] == [] and data["running"]["plan_matches"] is True
    orch_env.llama_profile(
        "t",
        model=tiny_gguf,
        binary=llama_server_binary,
        port=port,
        warmup=0,
        extra_args=("--temp", "0.5"),
    )
    differs = orch_env.run("plan", "t")
    assert differs.returncode == 0, differs.stdout + differs.stderr
    assert f"  note: {running} a different plan (" in differs.stdout
    assert "`orch up --replace t` restarts it with this one" in differs.stdout
    refused = orch_env.run("up", "t")
    assert refused.returncode == 4 and "--replace" in refused.stderr
    replaced = orch_env.run("up", "t", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    new_pid = int(str(orch_env.record("t")["pid"]))  # type: ignore[index]
    assert new_pid != old_pid and not _pid_running(old_pid)
    assert orch_env.run("down", "t").returncode == 0
    _nothing_left(orch_env, "t", new_pid)


def test_replace_with_a_broken_profile_keeps_the_running_one(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    port = free_port()
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port, warmup=0)
    assert orch_env.run("up", "t").returncode == 0
    old_pid = int(str(orch_env.record("t")["pid"]))  # type: ignore[index]
    missing = tmp_path / "moved.gguf"
    orch_env.llama_profile("t", model=missing, binary=llama_server_binary, port=port, warmup=0)
    refused = orch_env.run("up", "t", "--replace")
    assert refused.returncode == 4
    assert f"model file missing: {missing}" in refused.stderr
    assert "stopping" not in refused.stdout  # checked before anything was stopped
    assert _pid_running(old_pid) and orch_env.record("t") is not None
    assert orch_env.run("down", "t").returncode == 0
    _nothing_left(orch_env, "t", old_pid)


def test_model_file_missing(orch_env: OrchEnv, llama_server_binary: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    orch_env.llama_profile("t", model=missing, binary=llama_server_binary, port=free_port())
    before = _engine_pids(llama_server_binary)
    up = orch_env.run("up", "t")
    assert up.returncode == 4
    assert f"model file missing: {missing}" in up.stderr
    _nothing_left(orch_env, "t")
    assert _engine_pids(llama_server_binary) <= before


def test_port_taken(orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port)
        up = orch_env.run("up", "t")
    assert up.returncode == 4
    assert f"port 127.0.0.1:{port} is already in use" in up.stderr
    _nothing_left(orch_env, "t")


def test_corrupt_model_file(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "truncated.gguf"
    data = tiny_gguf.read_bytes()
    corrupt.write_bytes(data[: len(data) * 2 // 3])
    orch_env.llama_profile("t", model=corrupt, binary=llama_server_binary, port=free_port())
    up = orch_env.run("up", "t")
    assert up.returncode == 4, up.stdout + up.stderr
    assert f"{corrupt} is not a readable GGUF file" in up.stderr
    assert "Traceback" not in up.stderr
    _nothing_left(orch_env, "t")


def test_engine_exits_during_load(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    # A known flag with a value this binary rejects: --help preflight cannot catch it.
    orch_env.llama_profile(
        "t",
        model=tiny_gguf,
        binary=llama_server_binary,
        port=free_port(),
        extra_args=("--rope-scaling", "bogus"),
    )
    up = orch_env.run("up", "t")
    assert up.returncode == 5, up.stdout + up.stderr
    assert "engine exited with status 1 while loading" in up.stderr
    assert "cause: unknown or invalid argument" in up.stderr
    assert '"--rope-scaling": invalid value' in up.stderr
    assert "fix:   check engine.extra_args" in up.stderr
    assert "last log lines:" in up.stderr
    _nothing_left(orch_env, "t")


def test_exit_status_of_an_engine_that_just_exited(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    # llama-server's leader shows as a zombie before its other threads have gone, when waitpid
    # cannot collect it yet: the status is still known once it no longer runs (37 of 40 tries
    # here read None before exit_code() waited for it)
    for attempt in range(10):
        handle = launch(
            [str(llama_server_binary), "--rope-scaling", "bogus"], {}, tmp_path / f"{attempt}.log"
        )
        while handle.alive():
            time.sleep(0.001)
        assert handle.exit_code() == 1, attempt


def test_unsupported_flag_caught_by_help(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    # A flag the engine catalogue knows but this binary's --help does not list.
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=free_port())
    text = (orch_env.profiles / "models" / "t.toml").read_text()
    text = text.replace(
        "cache_ram_mib = 0\n", "cache_ram_mib = 0\ngrouped_expert_routing = false\n"
    )
    orch_env.write_profile("t", text)
    up = orch_env.run("up", "t", "--no-warmup")
    # ger=false renders nothing; the binary supports everything else: it starts.
    assert up.returncode == 0, up.stderr
    assert orch_env.run("down", "t").returncode == 0


def test_never_ready_times_out(orch_env: OrchEnv) -> None:
    port = free_port()
    orch_env.write_profile(
        "v", _vllm_profile(port, runtime_env='env = { FAKE_VLLM_MODE = "always-503" }')
    )
    start = time.monotonic()
    up = orch_env.run("up", "v", "--timeout", "1.5", "--skip-memory-check")
    took = time.monotonic() - start
    assert up.returncode == 5, up.stdout + up.stderr
    assert "not ready after 1.5 s (last /health: HTTP 503)" in up.stderr
    assert took < 10
    _nothing_left(orch_env, "v")
    assert not _fake_running(port)


def test_sigterm_during_warmup_stops_engine(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    port = free_port()
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port)
    text = (orch_env.profiles / "models" / "t.toml").read_text()
    orch_env.write_profile(
        "t", text.replace("requests = 2\nmax_tokens = 8", "requests = 200\nmax_tokens = 64")
    )
    proc = orch_env.popen("up", "t")
    deadline = time.monotonic() + 30
    pid = None
    while time.monotonic() < deadline:
        record = orch_env.record("t")
        if record and _slots_processing(port):
            pid = int(str(record["pid"]))
            break
        time.sleep(0.02)
    assert pid is not None, "never saw warm-up requests"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, out + err
    assert "SIGTERM" in err
    _nothing_left(orch_env, "t", pid)


def _slots_processing(port: int) -> bool:
    from orchestrator.health import get_json

    slots = get_json(f"http://127.0.0.1:{port}", "/metrics")
    del slots
    from orchestrator.instances import live_figures

    figures = live_figures(f"http://127.0.0.1:{port}")
    return bool(figures.get("tokens_predicted_total", 0) > 0)


def _vllm_profile(port: int, *, runtime_env: str = "", served: str = "tiny-served") -> str:
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
served_model_name = "{served}"

[runtime]
kind = "process"
{runtime_env}

[publish]
port = {port}

[warmup]
requests = 2
max_tokens = 8
"""


def _fake_running(port: int) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any("fake_vllm.py" in c for c in cmd) and str(port) in cmd:
            return True
    return False


def test_fake_vllm_up_and_down(orch_env: OrchEnv) -> None:
    port = free_port()
    orch_env.write_profile("v", _vllm_profile(port))
    start = time.monotonic()
    up = orch_env.run("up", "v", "--skip-memory-check")
    took = time.monotonic() - start
    assert up.returncode == 0, up.stdout + up.stderr
    assert "flag check skipped for vLLM" in up.stdout
    assert "warm-up 2:" in up.stdout and "[wall-clock]" in up.stdout
    assert took >= 1.0  # the fake refuses connections for 1 s
    print(f"\n[measured] fake vLLM up: {took:.2f} s")
    (status,) = json.loads(orch_env.run("status", "v", "--json").stdout)
    assert status["state"] == "running" and status["engine"] == "vllm"
    down = orch_env.run("down", "v")
    assert down.returncode == 0, down.stderr
    _nothing_left(orch_env, "v", int(status["pid"]))


def test_vllm_without_memory_override_refuses_here(orch_env: OrchEnv) -> None:
    orch_env.write_profile("v", _vllm_profile(free_port()))
    up = orch_env.run("up", "v")
    assert up.returncode == 4 and "CUDA0: not present on this machine" in up.stderr
    _nothing_left(orch_env, "v")


def test_foreground_supervises_and_stops_on_sigterm(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    port = free_port()
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port)
    orch_env.env["NOTIFY_SOCKET"] = str(sock_path)
    orch_env.env["WATCHDOG_USEC"] = "400000"  # ping every 0.2 s
    proc = orch_env.popen("up", "t", "--foreground")
    orch_env.env["WATCHDOG_PID"] = ""
    messages: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and messages.count("WATCHDOG=1") < 2:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    pid = int(str(orch_env.record("t")["pid"]))  # type: ignore[index]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    sock.settimeout(0.5)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    sock.close()
    assert proc.returncode == 0, out + err
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert any("loading" in m or "launching" in m for m in statuses), messages
    ready_at = messages.index("READY=1")
    assert any("warming up" in m for m in messages[:ready_at]), messages
    assert "WATCHDOG=1" in messages[ready_at:]
    assert "STOPPING=1" in messages
    _nothing_left(orch_env, "t", pid)


def test_down_unknown_profile(orch_env: OrchEnv) -> None:
    down = orch_env.run("down", "nothing-here")
    assert down.returncode == 6 and "not running: nothing-here" in down.stderr


def test_concurrent_up_only_one_launches(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=free_port())
    procs = [orch_env.popen("up", "t") for _ in range(2)]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    codes = sorted(int(r[2]) for r in results)
    text = "".join(r[0] + r[1] for r in results)
    # either the second saw the lock, or it came after and found it running
    assert codes[0] == 0 and codes[1] in (0, 4), text
    assert len(_engine_pids(llama_server_binary) & {int(str(orch_env.record("t")["pid"]))}) == 1  # type: ignore[index]
    assert orch_env.run("down", "t").returncode == 0


if __name__ == "__main__":
    sys.exit(os.EX_USAGE)


def test_logs_follow_without_a_log_file(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    orch_env.llama_profile(
        "t", model=tiny_gguf, binary=llama_server_binary, port=free_port(), warmup=0
    )
    assert orch_env.run("up", "t").returncode == 0
    record = orch_env.record("t")
    assert record is not None
    Path(str(record["log_path"])).unlink()
    follow = orch_env.run("logs", "t", "-f")
    assert follow.returncode == 6, follow.stdout + follow.stderr
    assert "its log" in follow.stderr and "is gone" in follow.stderr
    assert "Traceback" not in follow.stderr
    assert orch_env.run("down", "t").returncode == 0
    _nothing_left(orch_env, "t", int(str(record["pid"])))


def test_replace_onto_a_taken_port_keeps_the_running_one(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    orch_env.llama_profile(
        "t", model=tiny_gguf, binary=llama_server_binary, port=free_port(), warmup=0
    )
    assert orch_env.run("up", "t").returncode == 0
    old_pid = int(str(orch_env.record("t")["pid"]))  # type: ignore[index]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        orch_env.llama_profile(
            "t", model=tiny_gguf, binary=llama_server_binary, port=taken, warmup=0
        )
        refused = orch_env.run("up", "t", "--replace")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"port 127.0.0.1:{taken} is already in use by something --replace" in refused.stderr
    assert _pid_running(old_pid)
    assert orch_env.run("down", "t").returncode == 0
    _nothing_left(orch_env, "t", old_pid)
