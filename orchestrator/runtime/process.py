"""The process runtime: the plan's argv as a child in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from orchestrator.errors import LaunchError


def tail_file(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (empty if missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - 64 * 1024, 0))
            data = fh.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


class ProcessHandle:
    """A process group orch started (or attached to from its record)."""

    def __init__(
        self,
        pid: int,
        log_path: Path,
        *,
        create_time: float | None = None,
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        """Attach to ``pid`` (its process group leader); ``popen`` when we started it."""
        self.pid = pid
        self.log_path = log_path
        self.popen = popen
        self.create_time = create_time
        if create_time is None:
            try:
                self.create_time = psutil.Process(pid).create_time()
            except psutil.Error:
                self.create_time = None

    def _process(self) -> psutil.Process | None:
        """The leader, unless it exited or its pid now belongs to someone else."""
        if self.popen is not None and self.popen.poll() is not None:
            return None
        try:
            proc = psutil.Process(self.pid)
            if self.create_time is not None and abs(proc.create_time() - self.create_time) > 0.5:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def _group(self) -> list[psutil.Process]:
        """Live (non-zombie) members of the process group."""
        if self._process() is None and not self._owns_group():
            return []
        out = []
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == self.pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return out

    def _owns_group(self) -> bool:
        # After the leader exits, the group id stays ours only if we started it.
        return self.popen is not None

    def alive(self) -> bool:
        """Whether the leader still runs."""
        return self._process() is not None

    def exit_code(self) -> int | None:
        """The leader's exit status, known only for a child of this orch."""
        if self.popen is None:
            return None
        code = self.popen.poll()
        if code is None and self._process() is None:
            # /proc shows a multi-threaded leader as a zombie while its other threads still
            # exit, and waitpid() reaps it only after them: wait that moment out
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.popen.wait(timeout=2.0)
        return code

    def log_tail(self, lines: int) -> list[str]:
        """The last lines of the log file."""
        return tail_file(self.log_path, lines)

    def describe(self) -> str:
        """``pid N``."""
        return f"pid {self.pid}"

    def pids(self) -> list[int]:
        """The group's pids."""
        return [p.pid for p in self._group()]

    def stop(self, grace_s: float) -> None:
        """SIGTERM the group, wait ``grace_s``, SIGKILL what is left; idempotent."""
        if not self._group():
            self._reap()
            return
        self._signal(signal.SIGTERM)
        if self._wait_gone(grace_s):
            return
        self._signal(signal.SIGKILL)
        if not self._wait_gone(5.0):
            raise LaunchError(f"pid {self.pid}: still running after SIGKILL")

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass

    def _wait_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        delay = 0.01
        while time.monotonic() < deadline:
            self._reap()
            if not self._group():
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._reap()
        return not self._group()


def launch(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, *, header: str = ""
) -> ProcessHandle:
    """Start ``argv`` (no shell) in a new session, output to ``log_path`` (truncated).

    Args:
        argv: The command; ``argv[0]`` is looked up on ``PATH``.
        env: The complete environment for the child.
        log_path: stdout and stderr go here.
        header: A first line for the log (what orch ran and when).

    Returns:
        The handle of the started group.

    Raises:
        LaunchError: If the program cannot be executed at all.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        if header:
            log.write(header.encode() + b"\n")
            log.flush()
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot execute {argv[0]}: {exc.strerror or exc}") from None
    return ProcessHandle(popen.pid, log_path, popen=popen)
