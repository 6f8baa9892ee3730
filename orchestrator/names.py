"""What a profile name may be: the one check every command applies before using a NAME.

A name becomes a file name (``models/NAME.toml``, ``run/NAME.json``, ``logs/NAME.log``), a
container name (``orch-NAME``) and a unit name (``orch-NAME.service``), so it must never
carry a path separator, start with a dot or a dash, or be longer than a file name allows.
"""

from __future__ import annotations

import re

from orchestrator.errors import ProfileError

PROFILE_NAME_MAX = 64
"""Characters; ``orch-NAME.service`` and ``.NAME.json.PID.tmp`` stay far below NAME_MAX."""

PROFILE_NAME = rf"^[a-z0-9][a-z0-9._-]{{0,{PROFILE_NAME_MAX - 1}}}$"
"""Lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit."""

_PROFILE_NAME = re.compile(PROFILE_NAME)


def is_profile_name(name: str) -> bool:
    """Whether ``name`` is a valid profile name."""
    return bool(_PROFILE_NAME.fullmatch(name))


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid profile name (None when it is)."""
    if is_profile_name(name):
        return None
    shown = name if len(name) <= 80 else f"{name[:40]}...{name[-20:]}"
    return (
        f"{shown!r} is not a valid profile name: 1-{PROFILE_NAME_MAX} characters from a-z 0-9 "
        f". _ -, starting with a letter or digit ({PROFILE_NAME})"
    )


def require_profile_name(name: str, where: str, what: str = "NAME") -> str:
    """Return ``name``, or raise ProfileError (exit 2) saying what a valid one looks like.

    Args:
        name: The name to check.
        where: Who is asking, e.g. ``orch down``; the message starts with it.
        what: The argument or key that held the name.
    """
    problem = name_problem(name)
    if problem is not None:
        raise ProfileError(where, [f"{what}: {problem}"])
    return name
