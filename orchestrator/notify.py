"""A tiny sd_notify client: READY, STATUS, WATCHDOG and STOPPING for ``Type=notify`` units.

Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a silent no-op. Send
failures are swallowed too: a notification is advice to the service manager, and losing one
must never take down the engine orch is supervising.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _address(value: str) -> str | bytes:
    """The socket address for ``$NOTIFY_SOCKET``; ``@name`` names an abstract socket."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends sd_notify datagrams to the socket systemd named, if any."""

    def __init__(
        self,
        socket_path: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        """A notifier for ``socket_path`` (None or empty: disabled).

        Args:
            socket_path: ``$NOTIFY_SOCKET``: a path, or ``@name`` for an abstract socket.
            watchdog_usec: ``$WATCHDOG_USEC``, the watchdog timeout in microseconds.
            watchdog_pid: ``$WATCHDOG_PID``, the process the watchdog is meant for.
        """
        self._path = socket_path or None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier configured from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_usec=_int_or_none(env.get("WATCHDOG_USEC")),
            watchdog_pid=_int_or_none(env.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self._path is not None

    def status(self, text: str) -> None:
        """Set the unit's free-form status line (``systemctl status``)."""
        one_line = " ".join(text.split())
        self._send(f"STATUS={one_line}")

    def ready(self) -> None:
        """Tell systemd that start-up finished."""
        self._send("READY=1")

    def watchdog(self) -> None:
        """Keep the watchdog from firing."""
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for at least ``seconds`` more before the start (or stop) timeout fires.

        Sent while a slow load still makes progress, so a large model that reads steadily
        is not killed by ``TimeoutStartSec``, while a stalled one still is.
        """
        self._send(f"EXTEND_TIMEOUT_USEC={max(int(seconds * 1_000_000), 0)}")

    def stopping(self) -> None:
        """Tell systemd that shut-down began."""
        self._send("STOPPING=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to call :meth:`watchdog`: half the timeout, or None when there is none."""
        if not self._watchdog_usec or self._watchdog_usec <= 0:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def _send(self, message: str) -> None:
        if self._path is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(_address(self._path))
                sock.sendall(message.encode())
        except OSError:
            pass


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        return None
