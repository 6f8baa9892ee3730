"""A plan plus host facts → the text of a systemd unit. Pure: nothing here probes the host.

The unit runs ``orch up --foreground NAME`` as a ``Type=notify`` service: orch itself tells
systemd when the engine is ready (after warm-up), pings the watchdog while it supervises, and
``orch down NAME`` stops it. Everything about the host (where orch lives, the environment it
needs) arrives as :class:`UnitHost`, so the same inputs always give the same text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import jinja2

from orchestrator.engines import adapter_for
from orchestrator.errors import OrchError
from orchestrator.memory.breakdown import GIB
from orchestrator.plan import Plan
from orchestrator.profiles.schema import PodmanRuntime
from orchestrator.textsafe import escape_controls, is_unsafe

TEMPLATE = "systemd/orch.service.j2"
WARMUP_BASE_S = 30
"""Allowance after the health check passes: the process settling and the first request."""
WARMUP_PER_REQUEST_S = 60
"""Allowance per warm-up request: a cold CPU prefill can take tens of seconds."""
WATCHDOG_S = 60
"""orch pings every half of this while it supervises the engine."""
STOP_TIMEOUT_S = 90
RESTART_S = 30
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnitError(OrchError):
    """The unit cannot be written from the given inputs."""

    exit_code = 2


@dataclass(frozen=True)
class UnitHost:
    """Facts about the host the unit refers to, gathered by the caller.

    Attributes:
        orch_path: Absolute path of the ``orch`` executable the unit runs.
        environment: ``Environment=`` variables (ORCH_PROFILES_DIR, ORCH_STATE_DIR, PATH...).
        user: A ``systemctl --user`` unit (no system targets; ``default.target``).
    """

    orch_path: str
    environment: Mapping[str, str] = field(default_factory=dict)
    user: bool = False


def unit_name(profile_name: str) -> str:
    """The unit's file name: ``orch-NAME.service``."""
    return f"orch-{profile_name}.service"


def warmup_allowance_s(plan: Plan) -> int:
    """Seconds allowed between the engine answering /health and orch reporting READY."""
    return WARMUP_BASE_S + WARMUP_PER_REQUEST_S * plan.profile.warmup.requests


def start_timeout_s(plan: Plan) -> int:
    """``TimeoutStartSec``: the plan's load timeout plus the warm-up allowance."""
    return math.ceil(plan.load_timeout_s) + warmup_allowance_s(plan)


def escape_specifiers(text: str) -> str:
    """Escape systemd's ``%`` specifiers."""
    return text.replace("%", "%%")


def quote_word(word: str) -> str:
    r"""One ExecStart= word: quoted when needed, ``%`` and ``$`` escaped.

    Control characters become C escapes (``\xNN``), which systemd decodes inside quotes, so no
    word can end the line and add a directive.
    """
    text = escape_specifiers(word).replace("$", "$$")
    if text and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escape_controls(quoted, keep="") + '"'


def environment_line(name: str, value: str) -> str:
    """One ``Environment=`` assignment, double-quoted so spaces survive."""
    if not _ENV_NAME.fullmatch(name):
        raise UnitError(f"environment: {name!r} is not a variable name")
    if any(is_unsafe(c) for c in value):
        raise UnitError(f"environment: {name} contains a control character")
    text = escape_specifiers(f"{name}={value}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _description(plan: Plan) -> str:
    text = " ".join(plan.profile.description.split()) or f"{plan.profile.engine.kind} model server"
    # one line, and no trailing backslash (systemd would join the next line to it)
    text = escape_controls(text, keep="").rstrip("\\ ")
    return escape_specifiers(f"orch {plan.name}: {text}")


def unit_context(plan: Plan, host: UnitHost) -> dict[str, object]:
    """The template's variables, every value already escaped for systemd."""
    if not PurePosixPath(host.orch_path).is_absolute():
        raise UnitError(f"orch path {host.orch_path!r} is not absolute (systemd needs one)")
    if any(is_unsafe(c) for c in host.orch_path):
        raise UnitError(f"orch path {host.orch_path!r} holds a control character systemd refuses")
    orch = quote_word(host.orch_path)
    profile = plan.profile
    podman = isinstance(profile.runtime, PodmanRuntime)
    wants: list[str] = []
    after: list[str] = []
    mounts: list[str] = []
    if not host.user:
        # Clients reach the server over the network and vLLM may fetch weights: wait for it.
        wants.append("network-online.target")
        after.append("network-online.target")
    if podman:
        # podman is daemonless (no podman.socket needed); it does need its runtime dir.
        mounts.append("%t/containers")
    engine = profile.engine
    memlock = adapter_for(engine).locks_memory(engine)
    locked = plan.memory.devices["CPU"].weights if "CPU" in plan.memory.devices else 0
    api_key_env = profile.secrets.api_key_env or ""
    passed = " ".join(f"{v}=..." for v in (api_key_env, *profile.secrets.pass_env) if v)
    return {
        "name": plan.name,
        "description": _description(plan),
        "wants": wants,
        "after": after,
        "requires_mounts_for": mounts,
        "exec_start": f"{orch} up --foreground {quote_word(plan.name)}",
        "exec_stop": f"{orch} down {quote_word(plan.name)}",
        "environment": [environment_line(k, v) for k, v in sorted(host.environment.items())],
        "environment_file": f"-%E/orch/{plan.name}.env" if passed else "",
        "api_key_env": passed,
        "load_timeout_s": math.ceil(plan.load_timeout_s),
        "model_gib": f"{plan.model_bytes / GIB:.2f}",
        "warmup_s": warmup_allowance_s(plan),
        "warmup_requests": profile.warmup.requests,
        "timeout_start_s": start_timeout_s(plan),
        "timeout_stop_s": STOP_TIMEOUT_S,
        "watchdog_s": WATCHDOG_S,
        "restart_s": RESTART_S,
        "memlock_infinity": memlock,
        "memlock_notes": _memlock_notes(podman, locked) if memlock else [],
        "wanted_by": "default.target" if host.user else "multi-user.target",
    }


def _memlock_notes(podman: bool, locked: int) -> list[str]:
    """What the host must allow for ``load_mode = "mlock"`` to lock the weights."""
    size = f"{locked / GIB:.2f} GiB"
    notes = [f'engine.load_mode = "mlock": llama-server locks {size} of weights in RAM,']
    if podman:
        notes += [
            "which then cannot be swapped or reclaimed. The container gets CAP_IPC_LOCK and",
            "--ulimit memlock=-1:-1. Rootful podman needs nothing more. Rootless podman cannot",
            "raise a limit above the user's own and the capability does not count there: the",
            "user's hard memlock limit must be unlimited (/etc/security/limits.conf:",
            '"USER hard memlock unlimited", or DefaultLimitMEMLOCK= for a user manager).',
        ]
    else:
        notes += [
            "which then cannot be swapped or reclaimed. LimitMEMLOCK= below lifts the limit for",
            "a system unit; a user unit cannot exceed the user manager's limit",
            "(DefaultLimitMEMLOCK= in /etc/systemd/user.conf, or /etc/security/limits.conf).",
        ]
    return notes


def render_unit(plan: Plan, host: UnitHost, env: jinja2.Environment) -> str:
    """The unit file text for ``plan`` (``env``: orch's strict template environment)."""
    try:
        return env.get_template(TEMPLATE).render(**unit_context(plan, host))
    except jinja2.TemplateNotFound as exc:
        raise UnitError(f"template {exc.name!r} not found in {env.loader}") from None
    except jinja2.UndefinedError as exc:
        raise UnitError(f"{TEMPLATE}: {exc.message}") from None


SERVE_TEMPLATE = "systemd/orch-serve.service.j2"
SERVE_START_BASE_S = 30
"""Allowance for the gateway itself to plan its profiles and bind its port."""


def serve_unit_name() -> str:
    """The gateway unit's file name."""
    return "orch-serve.service"


def render_serve_unit(
    names: list[str],
    pinned: list[Plan],
    host: UnitHost,
    env: jinja2.Environment,
    *,
    port: int,
    drain_grace_s: float,
) -> str:
    """The unit text for ``orch serve NAMES --port PORT``.

    The start timeout covers loading every pinned profile (its load timeout plus its warm-up
    allowance) one after another; the stop timeout covers the drain and the engines' stops.
    """
    if not PurePosixPath(host.orch_path).is_absolute():
        raise UnitError(f"orch path {host.orch_path!r} is not absolute (systemd needs one)")
    words = [quote_word(host.orch_path), "serve", *(quote_word(n) for n in names)]
    words += ["--port", str(port)]
    start = SERVE_START_BASE_S + sum(start_timeout_s(p) for p in pinned)
    note = (
        "pinned " + ", ".join(f"{p.name} {start_timeout_s(p)} s" for p in pinned)
        if pinned
        else "no pinned profiles"
    )
    context = {
        "description": escape_specifiers(f"orch serve: {', '.join(names)}"),
        "wants": [] if host.user else ["network-online.target"],
        "after": [] if host.user else ["network-online.target"],
        "exec_start": " ".join(words),
        "environment": [environment_line(k, v) for k, v in sorted(host.environment.items())],
        "pinned_note": escape_specifiers(note),
        "timeout_start_s": start,
        "drain_s": math.ceil(drain_grace_s),
        "timeout_stop_s": math.ceil(drain_grace_s) + STOP_TIMEOUT_S,
        "restart_s": RESTART_S,
        "wanted_by": "default.target" if host.user else "multi-user.target",
    }
    try:
        return env.get_template(SERVE_TEMPLATE).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise UnitError(f"template {exc.name!r} not found in {env.loader}") from None
