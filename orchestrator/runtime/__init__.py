"""Running engines: a plain process group or a podman container, behind one small protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

STOP_GRACE_S = 10.0
"""SIGTERM → SIGKILL grace period for ``orch down`` and failed launches."""


class Handle(Protocol):
    """A launched engine, whichever runtime runs it."""

    def alive(self) -> bool:
        """Whether the engine is still running."""
        ...

    def exit_code(self) -> int | None:
        """The exit status once it has stopped (None while running or if unknown)."""
        ...

    def log_tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines of its output."""
        ...

    def stop(self, grace_s: float) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; idempotent."""
        ...

    def describe(self) -> str:
        """``pid 123`` or ``container abc123``."""
        ...

    def pids(self) -> list[int]:
        """Host pids of the engine's processes (for RSS / GPU memory)."""
        ...


@dataclass(frozen=True)
class Unverified:
    """What a record names but orch cannot prove it started: never signalled, never trusted.

    It reads as not running, and stopping it does nothing.
    """

    what: str
    """``pid 123`` or ``container abc123``."""
    why: str
    """Why it is not provably orch's, e.g. ``its record has no process start time``."""

    def alive(self) -> bool:
        """Never: nothing unverified is treated as running."""
        return False

    def exit_code(self) -> int | None:
        """Unknown."""
        return None

    def log_tail(self, lines: int) -> list[str]:
        """Nothing: its output is not orch's to show."""
        return []

    def stop(self, grace_s: float) -> None:
        """Nothing: orch signals only what it started."""

    def describe(self) -> str:
        """``pid 123 (not verified: ...)``."""
        return f"{self.what} (not verified: {self.why})"

    def pids(self) -> list[int]:
        """None."""
        return []
