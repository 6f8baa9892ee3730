"""`orch logs NAME -f`: history, then new engine output as it is written, until stopped.

Real llama-server (as a process and in podman). A chat request makes the engine log its
slot lines; the follower must print them while it runs, with its stdout a pipe and Python's
normal block buffering (PYTHONUNBUFFERED unset, as for a user), and end cleanly on SIGINT,
SIGTERM, or when the engine stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from orchestrator.health import request
from tests.conftest import CONTAINERS_CONF, OrchEnv, free_port
from tests.test_lifecycle_podman import _containers, _podman, _podman_services, _runtime

REQUEST_DONE = "stop processing"
"""llama-server's line when a request's slot is released."""


class Follower:
    """``orch logs NAME -f`` as a child, its stdout read line by line in a thread."""

    def __init__(self, orch: OrchEnv, *args: str) -> None:
        self.proc = orch.popen("logs", *args)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def text(self) -> list[str]:
        with self._cond:
            return [line for _, line in self.lines]

    def wait_for(self, needle: str, timeout: float) -> float:
        """When a line containing ``needle`` arrived (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, line in self.lines:
                    if needle in line:
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._thread.is_alive()):
                    break
                self._cond.wait(min(left, 0.1))
        raise AssertionError(
            f"no line with {needle!r} after {timeout} s (exit {self.proc.poll()}):\n"
            + "\n".join(self.text()[-20:])
        )

    def stop(self, sig: signal.Signals, timeout: float = 30) -> tuple[int, str]:
        """Send ``sig``; the exit status and stderr."""
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the exit; the exit status and stderr."""
        code = self.proc.wait(timeout=timeout)
        self._thread.join(timeout=5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


def _chat(port: int) -> float:
    """One small chat completion; when it returned."""
    code, body = request(
        f"http://127.0.0.1:{port}",
        "/v1/chat/completions",
        method="POST",
        body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert code == 200, body[:200]
    return time.monotonic()


def _user_env(orch: OrchEnv) -> None:
    # Pipes are block-buffered for a user's orch; the test runner's environment may say not.
    orch.env.pop("PYTHONUNBUFFERED", None)


def test_follow_process_logs(orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path) -> None:
    _user_env(orch_env)
    port = free_port()
    orch_env.llama_profile("t", model=tiny_gguf, binary=llama_server_binary, port=port, warmup=0)
    up = orch_env.run("up", "t")
    assert up.returncode == 0, up.stdout + up.stderr
    pid = int(str((orch_env.record("t") or {})["pid"]))
    log = (orch_env.state / "logs" / "t.log").read_text().splitlines()

    follower = Follower(orch_env, "t", "-f", "-n", "5")
    follower.wait_for(log[-1], timeout=15)  # history shows before the engine writes again
    assert follower.text() == log[-5:]
    done = _chat(port)
    seen = follower.wait_for(REQUEST_DONE, timeout=15)
    print(
        f"\n[measured] process logs -f: request line printed {seen - done:+.2f} s after the reply"
    )
    code, err = follower.stop(signal.SIGINT)
    assert code == 0 and err == "", err

    follower = Follower(orch_env, "t", "-f", "-n", "1")
    follower.wait_for(REQUEST_DONE, timeout=15)
    code, err = follower.stop(signal.SIGTERM)
    assert code == 0 and err == "", err
    assert psutil.pid_exists(pid)  # following changed nothing

    # A reader that goes away (`orch logs t -f | head -1`) ends it quietly at the next line.
    piped = orch_env.popen("logs", "t", "-f", "-n", "1")
    assert piped.stdout is not None and piped.stdout.readline()
    piped.stdout.close()
    _chat(port)
    assert piped.wait(timeout=15) == 0
    assert piped.stderr is not None and piped.stderr.read() == ""

    # The engine stopping ends the follow, after its last words: no line missed or repeated.
    before = (orch_env.state / "logs" / "t.log").read_text().splitlines()
    follower = Follower(orch_env, "t", "-f", "-n", "0")
    time.sleep(0.5)
    assert follower.text() == []
    assert orch_env.run("down", "t").returncode == 0
    code, err = follower.finish(timeout=15)
    assert code == 0 and err == "", err
    final = (orch_env.state / "logs" / "t.log").read_text().splitlines()
    assert len(final) > len(before)
    assert follower.text() == final[len(before) :]


def test_follow_container_logs(orch_env: OrchEnv, podman_image: str, tiny_gguf: Path) -> None:
    _user_env(orch_env)
    port = free_port()
    orch_env.llama_profile(
        "pc",
        model=tiny_gguf,
        binary="llama-server",
        port=port,
        runtime=_runtime(podman_image),
        warmup=0,
    )
    up = orch_env.run("up", "pc")
    assert up.returncode == 0, up.stdout + up.stderr
    follower = Follower(orch_env, "pc", "-f", "-n", "3")
    follower.wait_for("", timeout=30)
    time.sleep(3)  # quiet for longer than the API client's read timeout
    assert follower.proc.poll() is None, follower.finish()
    # Exactly -n lines of history: cut by orch, not by podman's --tail (which counts the
    # pieces of a line written in parts as lines).
    history = follower.text()
    assert len(history) == 3 and not any("loading model" in line for line in history)
    done = _chat(port)
    seen = follower.wait_for(REQUEST_DONE, timeout=15)
    print(f"\n[measured] podman logs -f: request line printed {seen - done:+.2f} s after the reply")
    code, err = follower.stop(signal.SIGTERM)
    assert code == 0 and err == "", err
    assert _podman_services(orch_env.state) == []  # its private API service is gone too

    follower = Follower(orch_env, "pc", "-f", "-n", "1")
    follower.wait_for("", timeout=30)
    code, err = follower.stop(signal.SIGINT)
    assert code == 0 and err == "", err

    follower = Follower(orch_env, "pc", "-f", "-n", "0")
    time.sleep(1)
    assert follower.text() == []
    assert orch_env.run("down", "pc").returncode == 0
    code, err = follower.finish(timeout=30)
    assert code == 0 and err == "", err
    assert _containers("pc") == []
    deadline = time.monotonic() + 10
    while _podman_services(orch_env.state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _podman_services(orch_env.state) == []


def test_ctrl_c_ends_a_follow_even_when_sigint_was_ignored(tmp_path: Path) -> None:
    """A non-interactive shell starts background jobs with SIGINT ignored (`make check &`).

    The follower resets it, so the user's Ctrl-C (here: SIGINT) still ends the follow, and
    this test does not depend on the disposition pytest itself inherited.
    """
    engine = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        state = tmp_path / "state"
        (state / "run").mkdir(parents=True)
        (state / "logs").mkdir()
        (state / "logs" / "bg.log").write_text("one\ntwo\nthree\n")
        record = {
            "name": "bg",
            "runtime": "process",
            "plan_hash": "0123456789ab",
            "endpoint": "http://127.0.0.1:9",
            "port": 9,
            "started_at": time.time(),
            "log_path": str(state / "logs" / "bg.log"),
            "pid": engine.pid,
            "pid_create_time": psutil.Process(engine.pid).create_time(),
        }
        (state / "run" / "bg.json").write_text(json.dumps(record))
        env = {**os.environ, "ORCH_STATE_DIR": str(state)}
        for disposition in (signal.SIG_IGN, signal.SIG_DFL):
            follower = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "logs", "bg", "-f", "-n", "2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                preexec_fn=lambda d=disposition: signal.signal(signal.SIGINT, d),  # type: ignore[misc]
            )
            assert follower.stdout is not None
            assert [follower.stdout.readline() for _ in range(2)] == ["two\n", "three\n"]
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=15) == 0
            assert follower.stderr is not None and follower.stderr.read() == ""
        assert engine.poll() is None  # following never touches the engine
    finally:
        engine.kill()
        engine.wait()


PARTIAL_SCRIPT = (
    'for i in 1 2 3 4 5 6; do printf "line$i-start "; sleep 0.05; printf "middle "; '
    'sleep 0.05; printf "end$i\\n"; done; printf "last-without-newline"'
)


def test_container_history_keeps_partial_lines_whole(tmp_path: Path, podman_image: str) -> None:
    """An engine that writes a line in pieces (podman logs each piece as a partial entry).

    podman 4.3's own `--tail N` counts the pieces as lines and glues the ones it cuts in the
    wrong order (`end5middle line6-start`); `orch logs -n N` and `-f -n N` must not.
    """
    name = f"orch-test-partial-{os.getpid()}"
    plan_hash = "0123456789ab"
    try:
        created = _podman(
            "run", "-d", "--name", name,
            "--label", "orch.profile=partial", "--label", f"orch.plan={plan_hash}",
            "-v", "/usr/bin/dash:/bin/dash:ro", "-v", "/usr/bin/sleep:/bin/sleep:ro",
            "--entrypoint", "/bin/dash", podman_image, "-c", PARTIAL_SCRIPT,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        container_id = created.stdout.strip().splitlines()[-1]
        assert _podman("wait", container_id).returncode == 0
        expected = [f"line{i}-start middle end{i}" for i in range(1, 7)] + ["last-without-newline"]
        inspect = _podman("inspect", "--format", "{{.HostConfig.LogConfig.Path}}", container_id)
        log_file = inspect.stdout.strip()
        entries = Path(log_file).read_text().splitlines()
        assert sum(" stdout P " in e for e in entries) >= 6, entries  # the pieces are there
        state = tmp_path / "state"
        (state / "run").mkdir(parents=True)
        record = {
            "name": "partial",
            "runtime": "podman",
            "plan_hash": plan_hash,
            "endpoint": "http://127.0.0.1:9",
            "port": 9,
            "started_at": time.time(),
            "log_path": "",
            "container_id": container_id,
            "container_name": name,
        }
        (state / "run" / "partial.json").write_text(json.dumps(record))
        env = {**os.environ, "ORCH_STATE_DIR": str(state), "CONTAINERS_CONF": str(CONTAINERS_CONF)}

        def logs(*args: str) -> list[str]:
            done = subprocess.run(
                [sys.executable, "-m", "orchestrator", "logs", "partial", *args],
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0 and done.stderr == "", done.stderr
            return done.stdout.splitlines()

        for n in (1, 2, 3, 7, 20):
            assert logs("-n", str(n)) == expected[-n:], n
            assert logs("-f", "-n", str(n)) == expected[-n:], n  # stopped: history, then done
        assert logs("-n", "0") == [] and logs("-f", "-n", "0") == []
    finally:
        _podman("rm", "--force", name)
