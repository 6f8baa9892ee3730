"""Install a unit: write the file, then ``systemctl [--user] daemon-reload`` and ``enable``.

Effects only; the unit text comes from :mod:`orchestrator.units`. Commands are argv lists,
never a shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrchError

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class SystemdError(OrchError):
    """systemctl is missing or failed, or the unit file cannot be written."""

    exit_code = 4


def user_unit_dir(environ: dict[str, str] | None = None, home: Path | None = None) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user`` (default ``~/.config/systemd/user``)."""
    env = dict(os.environ) if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str((home or Path.home()) / ".config")
    return Path(base) / "systemd" / "user"


def unit_dir(*, user: bool) -> Path:
    """Where ``--install`` writes units for the system or the calling user."""
    return user_unit_dir() if user else SYSTEM_UNIT_DIR


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class Installed:
    """What ``install`` did."""

    path: Path
    commands: tuple[tuple[str, ...], ...]


def install(
    text: str,
    filename: str,
    *,
    user: bool,
    directory: Path | None = None,
    systemctl: str = "systemctl",
    run: Runner = _run,
) -> Installed:
    """Write ``directory/filename`` and have systemd load and enable it.

    Args:
        text: The unit file's contents.
        filename: ``orch-NAME.service``.
        user: Use the calling user's manager (``systemctl --user``).
        directory: Where to write (default: the system or user unit folder).
        systemctl: The systemctl executable (a name on PATH or a path).
        run: Runs one argv and returns its result (tests pass a fake).

    Returns:
        The path written and the commands run.

    Raises:
        SystemdError: systemctl is missing or fails, or the file cannot be written.
    """
    binary = shutil.which(systemctl)
    if binary is None:
        raise SystemdError(
            f"{systemctl} not found: install systemd, or write the unit with "
            "--output FILE and install it by hand"
        )
    folder = directory or unit_dir(user=user)
    path = folder / filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except PermissionError:
        hint = "run it as root (sudo)" if not user else "check the folder's owner"
        raise SystemdError(
            f"cannot write {path}: permission denied ({hint}, or use --user)"
        ) from None
    except OSError as exc:
        raise SystemdError(f"cannot write {path}: {exc.strerror or exc}") from None
    scope = ["--user"] if user else []
    commands = (
        (binary, *scope, "daemon-reload"),
        (binary, *scope, "enable", filename),
    )
    for argv in commands:
        try:
            result = run(argv)
        except OSError as exc:
            raise SystemdError(f"{' '.join(argv)}: {exc.strerror or exc}") from None
        if result.returncode != 0:
            output = (result.stderr or result.stdout or "").strip()
            detail = f": {output}" if output else ""
            raise SystemdError(
                f"{' '.join(argv)} failed (exit {result.returncode}){detail}\n"
                f"the unit was written to {path}"
            )
    return Installed(path, commands)
