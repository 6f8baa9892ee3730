"""No traceback for a user's mistake: a bad state folder, a broken orch.toml, corrupt records.

Issue 11, class 7 (the runtime side). Each case pins the exit code and the message, which
names the file, key or value at fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import PROFILES, TEMPLATES


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(PROFILES))
    monkeypatch.setenv("ORCH_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def _orch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    return code, out, err


# ---------------------------------------------------------------- the state folder


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write: a read-only tmpfs as root, a 0555 folder otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "orch-test", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a read-only tmpfs as root (needs CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


STATE_CASES: list[tuple[str, Callable[[Path, Path], Path], list[str], int, str]] = [
    (
        "a file: up",
        lambda tmp, ro: _touch(tmp / "state-file"),
        ["up", "demo"],
        4,
        "orch: error: state folder {state}: cannot create {state}/run: Not a directory "
        "(ORCH_STATE_DIR / state_dir must be a writable folder)\n",
    ),
    (
        "a file: serve",
        lambda tmp, ro: _touch(tmp / "state-file"),
        ["serve", "demo", "--port", "1"],
        4,
        "orch: error: state folder {state}: cannot create {state}/gateway: Not a directory "
        "(ORCH_STATE_DIR / state_dir must be a writable folder)\n",
    ),
    (
        "read-only: up",
        lambda tmp, ro: ro / "state",
        ["up", "demo"],
        4,
        "orch: error: state folder {state}: cannot create {state}: {ro_reason} "
        "(ORCH_STATE_DIR / state_dir must be a writable folder)\n",
    ),
    (
        "under /proc: up",
        lambda tmp, ro: Path("/proc/orch-test-state"),
        ["up", "demo"],
        4,
        "orch: error: state folder {state}: cannot create {state}: No such file or directory "
        "(ORCH_STATE_DIR / state_dir must be a writable folder)\n",
    ),
    (
        "under /proc/self: serve",
        lambda tmp, ro: Path("/proc/self/orch"),
        ["serve", "demo", "--port", "1"],
        4,
        "orch: error: state folder {state}: cannot create {state}: No such file or directory "
        "(ORCH_STATE_DIR / state_dir must be a writable folder)\n",
    ),
]

READ_ONLY_OK: list[tuple[list[str], int, str]] = [
    # commands that only read work, or say "not running", whatever the state folder is
    (["status"], 0, "nothing running\n"),
    (["down", "demo"], 0, "demo: not running; nothing to stop\n"),
    (["down", "--all"], 0, "nothing running\n"),
]


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


@pytest.mark.parametrize(
    ("make", "argv", "code", "message"),
    [c[1:] for c in STATE_CASES],
    ids=[c[0] for c in STATE_CASES],
)
def test_unusable_state_folder(
    env: Path,
    read_only: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path, Path], Path],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    state = make(env, read_only)
    monkeypatch.setenv("ORCH_STATE_DIR", str(state))
    ro_reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert _orch(capsys, *argv) == (code, "", message.format(state=state, ro_reason=ro_reason))
    for argv_ok, code_ok, out_ok in READ_ONLY_OK:
        assert _orch(capsys, *argv_ok) == (code_ok, out_ok, "")


# ---------------------------------------------------------------- orch.toml

TOML_CASES = [
    (
        "syntax error",
        b"state_dir = \n",
        2,
        "{toml}: TOML syntax error: Invalid value (at line 1, column 13)",
    ),
    (
        "unknown key",
        b'stat_dir = "/x"\n',
        2,
        "{toml}: stat_dir: unknown key; did you mean state_dir? (valid: profiles_dir, templates_dir, state_dir, "
        "podman_binary, default_bind_host, serve)",
    ),
    (
        "unknown key in [serve]",
        b"[serve]\nprot = 1\n",
        2,
        "{toml}: serve.prot: unknown key; did you mean port? (valid: host, port, models, pinned, idle_ttl_s, "
        "queue_limit, max_wait_s, fairness_s, drain_grace_s, retry_after_s, profiles)",
    ),
    ("bad value", b'[serve]\nport = "x"\n', 2, "{toml}: serve.port: expected an integer, got 'x'"),
    ("out of range", b"[serve]\nport = 0\n", 2, "{toml}: serve.port: must be >= 1, got 0"),
    ("not UTF-8", b"\xff\xfe = 1\n", 2, "{toml}: not UTF-8 text (byte 0)"),
    (
        "nested too deeply",
        b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        2,
        "{toml}: TOML nested too deeply",
    ),
    ("a folder", None, 4, "{toml}: cannot read orch's settings: Is a directory"),
]


@pytest.mark.parametrize(
    ("content", "code", "message"), [c[1:] for c in TOML_CASES], ids=[c[0] for c in TOML_CASES]
)
def test_broken_orch_toml(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    code: int,
    message: str,
) -> None:
    toml = env / "orch.toml"
    monkeypatch.delenv("ORCH_CONFIG")  # ./orch.toml is the first place orch looks
    if content is None:
        toml.mkdir()
    else:
        toml.write_bytes(content)
    for argv in (["status"], ["plan", "--dry-run", "demo"], ["validate"]):
        got = _orch(capsys, *argv)
        assert got == (code, "", f"orch: error: {message.format(toml=toml)}\n"), argv


ENV_CASES = [
    ("ORCH_SERVE", '{"port": 0}', "orch: error: ORCH_SERVE: serve.port: must be >= 1, got 0\n"),
    (
        "ORCH_SERVE",
        "{bad",
        'orch: error: orch settings (ORCH_* variables): error parsing value for field "serve" '
        'from source "EnvSettingsSource": Expecting property name enclosed in double quotes: '
        "line 1 column 2 (char 1)\n",
    ),
]


@pytest.mark.parametrize(("var", "value", "message"), ENV_CASES, ids=[c[1] for c in ENV_CASES])
def test_bad_environment_setting(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    var: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(var, value)
    assert _orch(capsys, "status") == (2, "", message)


def test_the_file_wins_over_nothing_and_env_over_the_file(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = env / "settings.toml"
    toml.write_text('[serve]\nport = "x"\n')
    monkeypatch.setenv("ORCH_CONFIG", str(toml))
    assert (
        _orch(capsys, "status")[2]
        == f"orch: error: {toml}: serve.port: expected an integer, got 'x'\n"
    )
    monkeypatch.setenv("ORCH_SERVE", '{"port": 8081}')
    assert _orch(capsys, "status") == (0, "nothing running\n", "")


# ---------------------------------------------------------------- corrupt run records

RECORD = {
    "name": "demo",
    "runtime": "process",
    "plan_hash": "0123456789ab",
    "endpoint": "http://127.0.0.1:9",
    "port": 9,
    "started_at": 1.0,
    "log_path": "/x.log",
    "pid": 999999,
    "pid_create_time": 1.0,
}

CORRUPT = [
    ("a JSON list", b"[1, 2]", "Input should be an object"),
    ("a string", b'"demo"', "Input should be an object"),
    (
        "truncated JSON",
        b'{"name": "demo",',
        "Invalid JSON: EOF while parsing a value at line 1 column 16",
    ),
    ("empty file", b"", "Invalid JSON: EOF while parsing a value at line 1 column 0"),
    ("not UTF-8", b"\xff\xfe", "Invalid JSON: expected value at line 1 column 1"),
    (
        "a string pid",
        json.dumps({**RECORD, "pid": "123"}).encode(),
        "pid: Input should be a valid integer",
    ),
    (
        "a bool pid",
        json.dumps({**RECORD, "pid": True}).encode(),
        "pid: Input should be a valid integer",
    ),
    ("pid 0", json.dumps({**RECORD, "pid": 0}).encode(), "pid: 0 is not a process orch starts"),
    ("pid -1", json.dumps({**RECORD, "pid": -1}).encode(), "pid: -1 is not a process orch starts"),
    ("pid 1", json.dumps({**RECORD, "pid": 1}).encode(), "pid: 1 is not a process orch starts"),
    (
        "another name",
        json.dumps({**RECORD, "name": "other"}).encode(),
        "name: 'other' is not the file's name 'demo'",
    ),
    (
        "no plan",
        json.dumps({k: v for k, v in RECORD.items() if k != "plan_hash"}).encode(),
        "plan_hash: Field required",
    ),
    (
        "a runtime",
        json.dumps({**RECORD, "runtime": "docker"}).encode(),
        "runtime: Input should be 'process' or 'podman'",
    ),
    (
        "a container id",
        json.dumps({**RECORD, "runtime": "podman", "container_id": "../x"}).encode(),
        "container_id: '../x' is not a container ID",
    ),
    (
        "no container id",
        json.dumps({**RECORD, "runtime": "podman"}).encode(),
        "container_id: missing for a container",
    ),
    ("no pid", json.dumps({**RECORD, "pid": None}).encode(), "pid: missing for a process"),
    ("a port", json.dumps({**RECORD, "port": 70000}).encode(), "port: 70000 is not a port"),
    ("gpus", json.dumps({**RECORD, "gpus": "0"}).encode(), "gpus: Input should be a valid array"),
    (
        "an infinite time",
        b'{"name": "demo", "runtime": "process", "plan_hash": "x", "endpoint": "e", "port": 9, "started_at": 1e999, "log_path": "", "pid": 5}',
        "a time is not a finite number",
    ),
]


@pytest.mark.parametrize(("content", "why"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_record(
    env: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    run = env / "state" / "run"
    run.mkdir(parents=True)
    path = run / "demo.json"
    path.write_bytes(content)
    said = f"{path}: corrupt run record ({why}); not trusted"

    assert _orch(capsys, "status") == (
        0,
        f"demo: corrupt record\n  {said} (`orch down demo` removes it)\n",
        "",
    )
    code, out, err = _orch(capsys, "status", "demo", "--json")
    assert (code, err) == (6, "")
    (row,) = json.loads(out)
    assert (row["name"], row["state"], row["pid"]) == ("demo", "corrupt record", None)
    code, out, err = _orch(capsys, "ps")
    assert code == 0 and "corrupt record" in out
    assert _orch(capsys, "logs", "demo") == (
        6,
        "",
        f"orch: warning: {said}; showing {env}/state/logs/demo.log\n"
        f"orch: error: demo: no record and no log at {env}/state/logs/demo.log\n",
    )
    assert _orch(capsys, "bench", "demo") == (4, "", f"orch: error: {said}\n")
    assert _orch(capsys, "down", "demo") == (
        0,
        f"demo: was not running (its record was corrupt ({why})); cleared its record\n",
        "",
    )
    assert not path.exists()
    assert _orch(capsys, "down", "demo") == (0, "demo: not running; nothing to stop\n", "")


def test_corrupt_record_does_not_hide_the_others(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = env / "state" / "run"
    run.mkdir(parents=True)
    (run / "a.json").write_bytes(b"[]")
    (run / "b.json").write_text(json.dumps({**RECORD, "name": "b", "started_at": time.time()}))
    (run / "Not A Name.json").write_text("{}")
    code, out, err = _orch(capsys, "status", "--json")
    assert (code, err) == (0, "")
    assert [(r["name"], r["state"]) for r in json.loads(out)] == [
        ("Not A Name", "corrupt record"),
        ("a", "corrupt record"),
        ("b", "not running"),
    ]
    code, out, err = _orch(capsys, "down", "--all")
    assert code == 0 and "b: was not running (pid 999999 has exited); cleared its record" in out
