"""Errors that reach the user as a message and an exit code, never as a traceback."""

from __future__ import annotations


class OrchError(Exception):
    """Base class for every error orch reports to the user."""

    exit_code = 1


class ProfileError(OrchError):
    """A profile (or orch.toml) is malformed, or refers to something that does not exist."""

    exit_code = 2

    def __init__(
        self, source: str, problems: list[str], *, sources: list[str] | None = None
    ) -> None:
        """``sources[i]``, when given, is the file problem ``i`` is about (an ``extends`` base)."""
        self.source = source
        self.problems = problems
        self.sources = sources or [source] * len(problems)
        super().__init__(
            "\n".join(f"{s}: {p}" for s, p in zip(self.sources, problems, strict=True))
        )


class BudgetError(OrchError):
    """A plan does not fit the hardware budget."""

    exit_code = 3


class PreflightError(OrchError):
    """Something the launch needs is missing or taken (binary, model file, port, memory)."""

    exit_code = 4


class LaunchError(OrchError):
    """The engine failed to start, exited while loading, or never became ready."""

    exit_code = 5


class ReadyTimeout(LaunchError):
    """The engine still ran but was not ready within its load timeout."""


class NotRunningError(OrchError):
    """A command needed a running instance and there is none."""

    exit_code = 6
