"""A NAME is never a path, state stays in the state folder, records are trusted only when proven.

Issue 11, class 1. Every command that takes a profile name refuses one that is not a profile
name (exit 2, the valid pattern in the message) before it touches the disk; a run record is
acted on only when its process is provably the one orch started.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator.cli import main
from orchestrator.names import PROFILE_NAME
from orchestrator.state import StateStore
from tests.conftest import CONTAINERS_CONF, PROFILES, TEMPLATES
from tests.test_lifecycle_podman import _podman

BAD_NAMES = [
    ("absolute path", "/VICTIM/Cargo"),
    ("a file's stem", "/VICTIM/file"),
    ("parent dirs", "../../x"),
    ("slash", "a/b"),
    ("300 characters", "a" * 300),
    ("65 characters", "a" * 65),
    ("empty", ""),
    ("dot first", ".hidden"),
    ("upper case", "Demo"),
    ("newline", "a\nb"),
    ("space", "a b"),
    ("nul-free control", "a\x1b[31mb"),
]

# every command that takes a profile NAME, with what else it needs to get that far
COMMANDS = [
    ("up", ["up", "{}"]),
    ("down", ["down", "{}"]),
    ("down two", ["down", "demo", "{}"]),
    ("status", ["status", "{}"]),
    ("logs", ["logs", "{}"]),
    ("logs -f", ["logs", "-f", "{}"]),
    ("bench", ["bench", "{}"]),
    ("systemd", ["systemd", "{}"]),
    ("systemd --serve", ["systemd", "--serve", "{}"]),
    ("new", ["new", "{}", "--from-gguf", "/VICTIM/file.log"]),
    ("serve", ["serve", "{}"]),
    ("plan", ["plan", "{}"]),
    ("plan --dry-run", ["plan", "--dry-run", "{}"]),
    ("plan --hardware", ["plan", "--dry-run", "demo", "--hardware", "{}"]),
    ("detect --name", ["detect", "--write", "--name", "{}"]),
    ("estimate --hardware", ["estimate", "/VICTIM/file.log", "--hardware", "{}"]),
    ("calibrate", ["calibrate", "{}", "--dry-run"]),
]


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path)] = "dir" if path.is_dir() else "other"
    return out


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state folder and a victim folder whose files NAMEs point at."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "Cargo.lock").write_text("[[package]]\n")
    (victim / "file.log").write_text("private\n")
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(PROFILES))
    monkeypatch.setenv("ORCH_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.chdir(victim)
    yield tmp_path


@pytest.mark.parametrize("bad", [b[1] for b in BAD_NAMES], ids=[b[0] for b in BAD_NAMES])
@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_bad_name_is_refused_before_any_disk_access(
    sandbox: Path, capsys: pytest.CaptureFixture[str], argv: list[str], bad: str
) -> None:
    bad = bad.replace("/VICTIM", str(sandbox / "victim"))
    words = [w.replace("/VICTIM", str(sandbox / "victim")).format(bad) for w in argv]
    before = _snapshot(sandbox)
    code = main(words)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    what = "--hardware" if "--hardware" in argv else "--name" if "--name" in argv else "NAME"
    what = "HARDWARE" if argv[0] == "calibrate" else what
    assert err.startswith(f"orch: error: orch {argv[0]}: {what}: "), err
    assert "is not a valid profile name: 1-64 characters from a-z 0-9 . _ -" in err
    assert PROFILE_NAME in err
    assert "Traceback" not in err and out == ""
    assert "\x1b" not in err and "\n" not in err.rstrip("\n")  # shown escaped, on one line
    assert _snapshot(sandbox) == before
    assert not (sandbox / "state").exists()


def test_name_like_an_option_is_refused(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["down", "-rf"])
    assert info.value.code == 2
    assert "unrecognized arguments: -rf" in capsys.readouterr().err
    assert not (sandbox / "state").exists()


def test_every_name_command_is_covered() -> None:
    from orchestrator.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands: dict[str, argparse.ArgumentParser] = action.choices
    takes_name = {
        cmd
        for cmd, sub in commands.items()
        if any(a.dest in ("name", "names") for a in sub._actions)
    }
    assert takes_name == {c[1][0] for c in COMMANDS} - {"estimate", "calibrate"}, takes_name


def test_state_paths_are_built_in_one_place(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.record_path("demo") == tmp_path / "run" / "demo.json"
    assert store.lock_path("demo") == tmp_path / "run" / "demo.lock"
    assert store.log_path("demo") == tmp_path / "logs" / "demo.log"
    assert store.bench_folder("demo") == tmp_path / "bench" / "demo"
    assert store.cache_path("engine-flags", "sha256-ab") == (
        tmp_path / "cache" / "engine-flags" / "sha256-ab.json"
    )
    for name in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(Exception, match="is not a valid profile name"):
            store.record_path(name)
        with pytest.raises(Exception, match="is not a valid profile name"):
            store.log_path(name)
        with pytest.raises(Exception, match="is not a valid profile name"):
            store.bench_folder(name)
    for key in ("../x", "a/b", ".x", ""):
        with pytest.raises(Exception, match="is not a cache key"):
            store.cache_path("engine-flags", key)


# ---------------------------------------------------------------- records naming other processes


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process orch did not start, leading its own group (as an engine would)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    yield proc
    proc.kill()
    proc.wait()


def _record(name: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": name,
        "runtime": "process",
        "plan_hash": "0123456789ab",
        "endpoint": "http://127.0.0.1:9",
        "port": 9,
        "started_at": time.time(),
        "log_path": "/etc/passwd",
    }
    base.update(fields)
    return base


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _run(*argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return done.returncode, done.stdout, done.stderr


FOREIGN = [
    (
        "no start time",
        lambda pid, t: {"pid": pid},
        "pid {pid} is not provably the one orch started: its record has no process start time",
    ),
    (
        "wrong start time",
        lambda pid, t: {"pid": pid, "pid_create_time": t - 3600},
        "pid {pid} is another process now (its start time or process group is not the one orch recorded)",
    ),
    (
        "supervisor without start time",
        lambda pid, t: {"pid": 999999, "pid_create_time": t, "supervisor_pid": pid},
        "pid 999999 has exited",
    ),
    (
        "supervisor with another start time",
        lambda pid, t: {
            "pid": 999999,
            "pid_create_time": t,
            "supervisor_pid": pid,
            "supervisor_create_time": t - 10,
        },
        "pid 999999 has exited",
    ),
]


@pytest.mark.parametrize(("make", "reason"), [f[1:] for f in FOREIGN], ids=[f[0] for f in FOREIGN])
def test_record_naming_a_foreign_process_is_never_signalled(
    sandbox: Path, bystander: subprocess.Popen[bytes], make: object, reason: str
) -> None:
    assert callable(make)
    started = psutil.Process(bystander.pid).create_time()
    run = sandbox / "state" / "run"
    run.mkdir(parents=True)
    (run / "demo.json").write_text(json.dumps(_record("demo", **make(bystander.pid, started))))
    before = _snapshot(sandbox / "victim")

    code, out, err = _run("status", "demo")
    assert code == 6 and "not running" in out, out + err
    assert reason.format(pid=bystander.pid) in out

    code, out, err = _run("down", "demo")
    assert code == 0, out + err
    assert (
        out
        == f"demo: was not running ({reason.format(pid=bystander.pid)}; left it alone); cleared its record\n"
        or (out.startswith("demo: was not running (pid 999999 has exited)"))
    ), out
    time.sleep(0.2)
    assert _alive(bystander), "orch signalled a process it did not start"
    assert not (run / "demo.json").exists()
    assert _snapshot(sandbox / "victim") == before


def test_record_with_the_right_start_time_is_stopped(
    sandbox: Path, bystander: subprocess.Popen[bytes]
) -> None:
    """The other side of the rule: what orch provably started is stopped."""
    started = psutil.Process(bystander.pid).create_time()
    run = sandbox / "state" / "run"
    run.mkdir(parents=True)
    record = _record("demo", pid=bystander.pid, pid_create_time=started)
    (run / "demo.json").write_text(json.dumps(record))
    code, out, err = _run("down", "demo", "--grace", "5")
    assert code == 0 and out.startswith(f"demo: stopped pid {bystander.pid} in "), out + err
    assert bystander.wait(timeout=10) == -signal.SIGTERM


def test_record_log_path_is_not_trusted(sandbox: Path, bystander: subprocess.Popen[bytes]) -> None:
    run = sandbox / "state" / "run"
    run.mkdir(parents=True)
    started = psutil.Process(bystander.pid).create_time()
    record = _record(
        "demo",
        pid=bystander.pid,
        pid_create_time=started,
        log_path=str(sandbox / "victim" / "file.log"),
    )
    (run / "demo.json").write_text(json.dumps(record))
    code, out, err = _run("logs", "demo")
    assert code == 0 and "private" not in out, out + err


FOREIGN_CONTAINERS = [
    ("no orch labels", [], "does not carry orch's labels for this profile and plan; left alone"),
    (
        "another profile",
        ["--label", "orch.profile=other", "--label", "orch.plan=0123456789ab"],
        "does not carry orch's labels for this profile and plan; left alone",
    ),
    (
        "another plan",
        ["--label", "orch.profile=demo", "--label", "orch.plan=ffffffffffff"],
        "does not carry orch's labels for this profile and plan; left alone",
    ),
]


@pytest.mark.parametrize(
    ("labels", "reason"),
    [f[1:] for f in FOREIGN_CONTAINERS],
    ids=[f[0] for f in FOREIGN_CONTAINERS],
)
def test_record_naming_a_foreign_container_is_never_stopped(
    sandbox: Path, podman_image: str, labels: list[str], reason: str
) -> None:
    name = f"orch-test-foreign-{os.getpid()}-{len(labels)}"
    try:
        created = _podman("create", "--name", name, *labels, podman_image, "--version")
        assert created.returncode == 0, created.stderr
        container_id = created.stdout.strip().splitlines()[-1]
        run = sandbox / "state" / "run"
        run.mkdir(parents=True)
        record = _record("demo", runtime="podman", container_id=container_id, container_name=name)
        (run / "demo.json").write_text(json.dumps(record))
        code, out, err = _run("down", "demo")
        assert code == 0, out + err
        assert out == (
            f"demo: was not running (container {name} ({container_id[:12]}) {reason}); "
            "cleared its record\n"
        )
        exists = _podman("container", "exists", container_id)
        assert exists.returncode == 0, "orch removed a container it did not start"
    finally:
        _podman("rm", "--force", name)
