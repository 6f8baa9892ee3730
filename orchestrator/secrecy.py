"""What counts as a secret, in one place, and how orch keeps secrets out of what it writes.

A secret is:

- the value of an engine flag that carries a key or token (:data:`SECRET_FLAGS`, every
  spelling the engines accept: llama.cpp and ik_llama.cpp ``--api-key`` and ``-hft`` /
  ``--hf-token``, vLLM ``--api-key`` and ``--hf-token``);
- the value of an environment variable whose name says it holds one (:func:`is_secret_name`:
  the name contains KEY, TOKEN, SECRET, PASSWORD, PASSWD, PASSPHRASE or CREDENTIAL, or is
  ``*_PWD`` / ``*_PASS``, in any case; ``TOKENIZER`` alone does not count).

Orch refuses both in a profile, where they would end up in command lines, plans, logs and
``podman inspect``: keys come from ``secrets.api_key_env`` / ``secrets.api_key_file``, and other
secret variables pass through by name (``secrets.pass_env``). Flags that point the engine at
a key file (``--api-key-file``) are orch's to render, after it has checked the file. Whatever
orch prints or writes still goes through :func:`redact_argv` / :func:`redact_env` as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

REDACTED = "<redacted>"

SECRET_FLAGS: frozenset[str] = frozenset(
    {
        "--api-key",  # llama.cpp, ik_llama.cpp, vLLM
        "--hf-token",  # llama.cpp, ik_llama.cpp, vLLM
        "-hft",  # llama.cpp, ik_llama.cpp
    }
)
"""Flags whose value is a key or token (common/arg.cpp, ik's common.cpp, vLLM's cli_args)."""

KEY_SOURCE_FLAGS: frozenset[str] = frozenset({"--api-key-file"})
"""Flags that name where the engine reads its keys: set through ``secrets.api_key_file``."""

_SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSW(?:OR)?D|PASSPHRASE|CREDENTIAL")
_SECRET_SUFFIX = re.compile(r"(?:^|_)(?:PWD|PASS)$")
_NOT_SECRET_WORDS = re.compile(r"TOKENI[SZ]ER")
"""``TOKENIZERS_PARALLELISM`` names the tokenizer, not a token."""


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    upper = _NOT_SECRET_WORDS.sub("", name.upper())
    return bool(_SECRET_WORDS.search(upper) or (_SECRET_SUFFIX.search(upper) and "_" in upper))


def flag_name(arg: str) -> str:
    """The flag an argument names, spelled the way the engines compare it.

    ``--x=value`` → ``--x``; vLLM also reads ``--api_key`` as ``--api-key`` and
    ``--flag.sub`` as a part of ``--flag``.
    """
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].split(".", 1)[0].replace("_", "-")
    return name


def is_secret_flag(arg: str) -> bool:
    """Whether ``arg`` (``--flag`` or ``--flag=value``) is a flag whose value is a secret."""
    return flag_name(arg) in SECRET_FLAGS


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with every secret value replaced by :data:`REDACTED`.

    Covers secret flags (``--api-key K`` and ``--api-key=K``) and podman's environment flags
    for secret names: ``-e NAME=VALUE``, ``--env=NAME=VALUE``, ``-eNAME=VALUE``, ``-de ...``.
    """
    out: list[str] = []
    hide_next = False
    env_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if env_next:
            out.append(redact_assignment(arg))
            env_next = False
            continue
        name, eq, _ = arg.partition("=")
        if is_secret_flag(arg):
            if eq:
                out.append(f"{name}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        env = podman_env_flag(arg)
        if env is None:
            out.append(arg)
        elif env[1]:
            out.append(env[0] + redact_assignment(env[1]))
        else:
            out.append(arg)
            env_next = True
    return out


PODMAN_BOOL_SHORT = frozenset("ditPq")
"""podman run's one-letter switches that take no value, so more letters may follow them."""


def podman_env_flag(arg: str) -> tuple[str, str] | None:
    """``(flag part, NAME=VALUE)`` if ``arg`` is podman's ``-e`` / ``--env``, else None.

    The assignment is ``""`` when it is the next argument: ``--env=K=V`` → ``("--env=",
    "K=V")``, ``-eK=V`` → ``("-e", "K=V")``, ``-de`` → ``("-de", "")``.
    """
    if arg.startswith("--"):
        name, eq, rest = arg.partition("=")
        return (name + eq, rest) if name == "--env" else None
    if not arg.startswith("-") or len(arg) < 2:
        return None
    letters = arg[1:]
    start = 0
    while start < len(letters) and letters[start] in PODMAN_BOOL_SHORT:
        start += 1
    if start == len(letters) or letters[start] != "e":
        return None
    flag, rest = arg[: start + 2], letters[start + 1 :]
    if rest.startswith("="):
        flag, rest = flag + "=", rest[1:]
    return flag, rest


def redact_assignment(word: str) -> str:
    """``NAME=VALUE`` with the value redacted when NAME is a secret's name."""
    name, eq, _ = word.partition("=")
    if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and is_secret_name(name):
        return f"{name}={REDACTED}"
    return word


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the values of secret names redacted."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}


def _advice(name: str) -> str:
    return (
        "keep secrets out of profiles and command lines: the API key comes from "
        "secrets.api_key_env or secrets.api_key_file; pass any other secret through by name "
        f'with secrets.pass_env = ["{name}"] and set it in orch\'s environment'
    )


def engine_arg_problems(args: Sequence[str], key: str) -> list[str]:
    """Secret flags in an engine's ``extra_args`` (``key`` is their dotted profile key)."""
    problems = []
    for i, arg in enumerate(args):
        flag = flag_name(arg)
        if flag in SECRET_FLAGS:
            problems.append(
                f"{key}[{i}]: {flag} would put a secret in the command line "
                "(use secrets.api_key_env or secrets.api_key_file)"
            )
        elif flag in KEY_SOURCE_FLAGS:
            problems.append(
                f"{key}[{i}]: {flag} bypasses orch's key-file checks; use "
                "secrets.api_key_file, which orch checks and mounts"
            )
    return problems


def env_problems(env: Mapping[str, str], key: str) -> list[str]:
    """Secret-named variables given a value in a profile's ``env`` table."""
    return [
        f"{key}.{name}: the name says it holds a secret, which would be written into command "
        f"lines and plans; {_advice(name)}"
        for name in env
        if is_secret_name(name)
    ]


def podman_arg_problems(args: Sequence[str], key: str) -> list[str]:
    """``-e NAME=VALUE`` (any spelling) for secret names in podman's ``extra_args``."""
    problems = []
    for i, arg in enumerate(args):
        env = podman_env_flag(arg)
        if env is None:
            continue
        assignment = env[1] or (args[i + 1] if i + 1 < len(args) else "")
        var, has_value, _ = assignment.partition("=")
        if has_value and is_secret_name(var):
            flag = "--env" if arg.startswith("--") else "-e"
            problems.append(
                f"{key}[{i}]: {flag} {var}=... puts a secret in the command line; " + _advice(var)
            )
    return problems
