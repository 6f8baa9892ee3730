"""Jinja templates → argv lists. Nothing here touches a shell.

Templates call ``flag(x)``, ``arg(x)``, ``pos(x)`` and ``raw(x)``; each call emits one JSON line
that becomes exactly one argv element, so spaces, quotes and ``$()`` in values survive
untouched. ``pos(x)`` marks a positional slot (the image, ``vllm serve``'s model, the binary):
a value there that starts with ``-`` would be read as an option, so rendering refuses it.
Layout between calls is ignored; any other text is a template bug.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.errors import OrchError
from orchestrator.secrecy import redact_argv, redact_env


class TemplateError(OrchError):
    """A template is missing, refers to an undefined variable, or emits stray text."""

    exit_code = 2


@dataclass(frozen=True)
class Rendered:
    """An argv and the flag names the template emitted (for catalogue checks)."""

    argv: tuple[str, ...]
    flags: tuple[str, ...]


def _element(kind: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value).removesuffix(".0") if value.is_integer() else repr(value)
    else:
        text = str(value)
    return "\n" + json.dumps({kind: text}) + "\n"


def make_environment(templates_dir: Path) -> jinja2.Environment:
    """A strict Jinja environment over ``templates_dir``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.globals["flag"] = lambda name: _element("f", name)
    env.globals["arg"] = lambda value: _element("v", value)
    env.globals["raw"] = lambda value: _element("r", value)
    env.globals["pos"] = lambda value: _element("p", value)
    return env


def render_argv(
    env: jinja2.Environment,
    template: str,
    context: dict[str, Any],
    spelling: Callable[[str], str] | None = None,
) -> Rendered:
    """Render ``template`` to an argv.

    ``spelling`` maps each ``flag()`` to the spelling the engine documents (an engine
    template may name any alias); ``raw()`` elements are left as given.
    """
    try:
        text = env.get_template(template).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name!r} not found in {env.loader}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{template}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or template}:{exc.lineno}: {exc.message}") from None
    argv: list[str] = []
    flags: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError:
            raise TemplateError(
                f"{template}: stray text in rendered line {number}: {stripped[:60]!r}"
            ) from None
        if not isinstance(item, dict) or len(item) != 1:
            raise TemplateError(f"{template}: rendered line {number} is not one element")
        ((kind, value),) = item.items()
        if kind == "f" and spelling is not None:
            value = spelling(value)
        if kind == "p" and (not value or value.startswith("-")):
            raise TemplateError(
                f"{template}: {value!r} in a positional slot would be read as an option"
            )
        argv.append(value)
        if kind in ("f", "r") and value.startswith("-"):
            flags.append(value.split("=", 1)[0])
    return Rendered(tuple(argv), tuple(flags))


def redact(argv: tuple[str, ...] | list[str]) -> list[str]:
    """Replace secret values (orchestrator.secrecy) with ``<redacted>``."""
    return redact_argv(argv)


def display(argv: tuple[str, ...] | list[str], env: dict[str, str] | None = None) -> str:
    """A paste-runnable, wrapped form: one flag and its values per line."""
    words = redact(argv)
    groups: list[list[str]] = []
    for word in words:
        is_flag = word.startswith("-") and len(word) > 1
        last = groups[-1] if groups else None
        takes_value = last is not None and (
            not last[0].startswith("-") or (len(last) == 1 and "=" not in last[0])
        )
        if is_flag or not takes_value or last is None:
            groups.append([word])
        else:
            last.append(word)
    if env:
        prefix = ["env", *(f"{k}={v}" for k, v in sorted(redact_env(env).items()))]
        groups.insert(0, prefix)
    return " \\\n  ".join(shlex.join(g) for g in groups)
