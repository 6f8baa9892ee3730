from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield str(path), sock
    finally:
        sock.close()


def test_messages_reach_the_socket(
    listener: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier.from_env()
    assert notifier.enabled
    notifier.status("loading   weights\n(3 GiB)")
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    got = [sock.recv(4096).decode() for _ in range(4)]
    assert got == [
        "STATUS=loading weights (3 GiB)",
        "READY=1",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"orch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        Notifier.from_env().ready()
        assert sock.recv(64) == b"READY=1"


def test_without_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    notifier.status("x")
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()


def test_a_dead_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert notifier.enabled
    notifier.ready()  # must not raise


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("not-a-number", None, None),
        ("0", None, None),
        ("20000000", None, 10.0),
        ("20000000", "self", 10.0),
        ("20000000", "other", None),
    ],
)
def test_watchdog_interval(usec: str | None, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/run/x"}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert Notifier.from_env(env).watchdog_interval_s() == expected
