"""Profile + hardware (+ GGUF header when present) → a frozen plan. Pure: no I/O here."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import jinja2

from orchestrator.autoplace import AutoPlacement, Candidate
from orchestrator.autoplace import choose as choose_placement
from orchestrator.engines import EngineAdapter, adapter_for
from orchestrator.errors import BudgetError, ProfileError
from orchestrator.memory.breakdown import GIB, MemoryEstimate
from orchestrator.memory.tensors import GgufHeader
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import ModelProfile, PodmanRuntime
from orchestrator.render import display, redact, render_argv
from orchestrator.sizing import (
    DeviceBudget,
    budgets,
    estimate,
    gpus_for,
    model_tensors,
    with_engine,
)

__all__ = [
    "DeviceBudget",
    "Plan",
    "budgets",
    "build_plan",
    "estimate",
    "gpus_for",
    "model_tensors",
    "require_fit",
]

CONTAINER_MODELS = "/models"
CONTAINER_SECRET = "/run/secrets/orch-api-key"
READ_BANDWIDTH_BYTES_S = 500 * 1000 * 1000
"""Conservative sequential read rate used to derive load timeouts (a SATA SSD)."""


@dataclass(frozen=True)
class Plan:
    """Everything ``orch up`` will do, decided before anything runs."""

    name: str
    source: str
    profile: ModelProfile
    hardware_name: str
    argv: tuple[str, ...]
    engine_argv: tuple[str, ...]
    engine_flags: tuple[str, ...]
    env: dict[str, str]
    secret_env: tuple[str, ...]
    endpoint: str
    host: str
    port: int
    memory: MemoryEstimate
    budget: tuple[DeviceBudget, ...]
    weights_source: str
    model_bytes: int
    load_timeout_s: float
    plan_hash: str
    warnings: tuple[str, ...]
    suggestions: tuple[str, ...]
    placement: AutoPlacement | None = None
    """What ``placement = "auto"`` considered and chose (None for manual placement)."""

    @property
    def fits(self) -> bool:
        """Whether every device is within budget (and, for vLLM, the KV pool holds the ctx)."""
        return all(b.fits for b in self.budget) and not self.suggestions

    def display(self) -> str:
        """The paste-runnable command (secrets redacted)."""
        return display(self.argv, self.env)

    def to_json(self) -> dict[str, Any]:
        """Machine-readable plan for ``--json``."""
        return {
            "name": self.name,
            "source": self.source,
            "hardware": self.hardware_name,
            "engine": self.profile.engine.kind,
            "runtime": self.profile.runtime.kind,
            "argv": redact(list(self.argv)),
            "env": self.env,
            "secret_env": list(self.secret_env),
            "endpoint": self.endpoint,
            "memory": self.memory.to_json(),
            "budget": [
                {"device": b.device, "need": b.need, "capacity": b.capacity, "fits": b.fits}
                for b in self.budget
            ],
            "fits": self.fits,
            "weights_source": self.weights_source,
            "model_bytes": self.model_bytes,
            "load_timeout_s": self.load_timeout_s,
            "plan_hash": self.plan_hash,
            "warnings": list(self.warnings),
            "suggestions": list(self.suggestions),
            "placement": self.placement.to_json() if self.placement else None,
        }


def _fits(resolved: ResolvedProfile, header: GgufHeader | None) -> bool:
    """Whether this variant of a profile fits its hardware (as orch would place it)."""
    if adapter_for(resolved.profile.engine).auto_placed(resolved.profile.engine):
        return choose_placement(resolved, model_tensors(resolved, header)[0]).chosen is not None
    memory, _, _ = estimate(resolved, header)
    return all(b.fits for b in budgets(memory, resolved.hardware))


# ---------------------------------------------------------------- rendering


def numactl_args(profile: ModelProfile) -> list[str]:
    """``numactl --cpunodebind=0 --membind=0`` or nothing."""
    n = profile.numactl
    if n is None:
        return []
    args = ["numactl"]
    if n.cpunodebind:
        args.append("--cpunodebind=" + ",".join(map(str, n.cpunodebind)))
    if n.membind:
        args.append("--membind=" + ",".join(map(str, n.membind)))
    if n.interleave:
        args.append("--interleave=" + ",".join(map(str, n.interleave)))
    if n.physcpubind:
        args.append("--physcpubind=" + n.physcpubind)
    return args


def _container_model_path(profile: ModelProfile) -> tuple[str, str]:
    """(host mount source, model path inside the container)."""
    host_path = PurePosixPath(profile.model.path)
    root = PurePosixPath(profile.model.mount_root) if profile.model.mount_root else host_path.parent
    try:
        relative = host_path.relative_to(root)
    except ValueError:
        raise ProfileError(
            "", [f"model.path: {host_path} is not inside model.mount_root {root}"]
        ) from None
    return str(root), posixpath.join(CONTAINER_MODELS, str(relative))


def _plan_hash(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_extra_args(
    resolved: ResolvedProfile, extra: Sequence[str], adapter: EngineAdapter
) -> None:
    known = adapter.catalogue.spellings
    kind = adapter.kind
    problems = []
    for i, arg in enumerate(extra):
        name = arg.split("=", 1)[0]
        if name in {"--api-key"}:
            problems.append(
                f"engine.extra_args[{i}]: {name} would put a secret in the command line "
                "(use secrets.api_key_env or secrets.api_key_file)"
            )
        elif arg.startswith("-") and not arg.lstrip("-").replace(".", "").isdigit():
            if name not in known:
                problems.append(f"engine.extra_args[{i}]: {name} is not a {kind} server flag")
    if problems:
        raise ProfileError(resolved.source, problems)


def build_plan(
    resolved: ResolvedProfile,
    env: jinja2.Environment,
    *,
    default_bind_host: str = "127.0.0.1",
    podman_binary: str = "podman",
    header: GgufHeader | None = None,
) -> Plan:
    """Decide everything about one launch. Raises ProfileError / TemplateError on bad input."""
    auto: AutoPlacement | None = None
    requested = resolved
    adapter = adapter_for(resolved.profile.engine)
    if adapter.auto_placed(resolved.profile.engine):
        auto = choose_placement(resolved, model_tensors(resolved, header)[0])
        resolved = with_engine(resolved, **_applied(auto).settings)
    profile = resolved.profile
    engine = profile.engine
    runtime = profile.runtime
    host = profile.publish.host or default_bind_host
    port = profile.publish.port
    is_podman = isinstance(runtime, PodmanRuntime)
    warnings: list[str] = []

    secret_env: list[str] = []
    api_key_file = ""
    api_key_mount = ""
    key_variable = adapter.api_key_variable
    if profile.secrets.api_key_env and key_variable is None:
        raise ProfileError(
            resolved.source,
            [
                f"secrets.api_key_env: {engine.kind} reads no API-key variable, so the "
                "server would start without authentication; use secrets.api_key_file"
            ],
        )
    key_file_by_variable = profile.secrets.api_key_file and not adapter.api_key_file_flag
    if key_variable and (profile.secrets.api_key_env or key_file_by_variable):
        secret_env.append(key_variable)  # no key-file flag: orch reads the file
    elif profile.secrets.api_key_file:
        if is_podman:
            api_key_file = CONTAINER_SECRET
            api_key_mount = f"{profile.secrets.api_key_file}:{CONTAINER_SECRET}:ro,Z"
        else:
            api_key_file = profile.secrets.api_key_file

    if isinstance(runtime, PodmanRuntime) and adapter.reads_gguf:
        mount_source, model_path = _container_model_path(profile)
        model_mount = f"{mount_source}:{CONTAINER_MODELS}:{profile.model.mount_options}"
        bind_host, bind_port = "0.0.0.0", runtime.container_port
    else:
        model_path = profile.model.path or profile.model.repo
        model_mount = ""
        if is_podman:
            assert isinstance(runtime, PodmanRuntime)
            bind_host, bind_port = "0.0.0.0", runtime.container_port
        else:
            bind_host, bind_port = host, port

    problems = adapter.settings_problems(engine)
    if problems:
        raise ProfileError(resolved.source, problems)
    _check_extra_args(resolved, engine.extra_args, adapter)
    # profile.gpus restricts the engine itself, not only orch's budget
    allowed = [name for name, _ in gpus_for(profile, resolved.hardware)]
    devices = ",".join(allowed) if profile.gpus is not None and allowed else ""
    warnings.extend(adapter.plan_warnings(profile, devices=devices, podman=is_podman))
    engine_ctx = {
        **adapter.template_context(engine),
        "devices": devices,
        "bind_host": bind_host,
        "bind_port": bind_port,
        "model_path": model_path,
        "api_key_file": api_key_file,
    }
    engine_rendered = render_argv(
        env, adapter.template, engine_ctx, spelling=adapter.catalogue.canonical
    )

    runtime_env = dict(runtime.env)
    hash_parts = {
        "name": resolved.name,
        "engine_argv": engine_rendered.argv,
        "runtime": runtime.model_dump(mode="json"),
        "numactl": numactl_args(profile),
        "publish": [host, port],
        "secret_env": secret_env,
    }
    plan_hash = _plan_hash(hash_parts)
    if is_podman:
        assert isinstance(runtime, PodmanRuntime)
        runtime_ctx = {
            "r": runtime,
            "numactl_args": numactl_args(profile),
            "podman": podman_binary,
            "container_name": container_name(resolved.name),
            "name": resolved.name,
            "plan_hash": plan_hash,
            "publish_host": host,
            "publish_port": port,
            "model_mount": model_mount or f"{_hf_cache_hint()}:/root/.cache/huggingface:Z",
            "api_key_mount": api_key_mount,
            "secret_env": secret_env,
            "engine_args": engine_rendered.argv,
        }
        full = render_argv(env, "runtimes/podman.j2", runtime_ctx)
        process_env: dict[str, str] = {}
    else:
        full = render_argv(
            env,
            "runtimes/process.j2",
            {
                "numactl_args": numactl_args(profile),
                "binary": engine.binary,
                "engine_args": engine_rendered.argv,
            },
        )
        indices = [int(name.removeprefix("CUDA")) for name in allowed] if devices else []
        process_env = adapter.process_env(runtime_env, indices)

    memory, weights_source, model_bytes = estimate(resolved, header)
    device_budgets = budgets(memory, resolved.hardware)
    if auto is not None and auto.chosen is None:
        device_budgets = _applied(auto).budget  # over budget once auto's GPU margin is kept
    suggestions = adapter.suggestions(
        requested,  # auto placement: search the settings the profile asked for
        memory,
        over_budget=not all(b.fits for b in device_budgets),
        fits=lambda variant: _fits(variant, header),
    )

    timeout = profile.health.timeout_s or round(120 + model_bytes / READ_BANDWIDTH_BYTES_S, 0)
    return Plan(
        name=resolved.name,
        source=resolved.source,
        profile=profile,
        hardware_name=resolved.hardware_name,
        argv=full.argv,
        engine_argv=engine_rendered.argv,
        engine_flags=engine_rendered.flags,
        env=process_env,
        secret_env=tuple(secret_env),
        endpoint=f"http://{_url_host(host)}:{port}",
        host=host,
        port=port,
        memory=memory,
        budget=device_budgets,
        weights_source=weights_source,
        model_bytes=model_bytes,
        load_timeout_s=timeout,
        plan_hash=plan_hash,
        warnings=tuple(warnings),
        suggestions=tuple(suggestions),
        placement=auto,
    )


def _applied(auto: AutoPlacement) -> Candidate:
    """The chosen candidate, or (nothing fits) the one over budget by the least."""
    if auto.chosen is not None:
        return auto.chosen
    return min(auto.considered, key=lambda c: sum(b.over_by for b in c.budget))


def _hf_cache_hint() -> str:
    return "/var/lib/orch/huggingface"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def container_name(profile_name: str) -> str:
    """Podman container name for a profile."""
    return f"orch-{profile_name}"


def require_fit(plan: Plan) -> None:
    """Raise BudgetError naming each device over budget, by how much, and what would fit."""
    lines = []
    for b in plan.budget:
        if not b.fits:
            lines.append(
                f"{b.device}: needs {b.need / GIB:.2f} GiB, budget {b.capacity / GIB:.2f} GiB "
                f"(over by {b.over_by / GIB:.2f} GiB)"
            )
    engine = plan.profile.engine
    lines.extend(adapter_for(engine).capacity_problems(engine, plan.memory))
    if not lines:
        return
    text = f"{plan.source}: does not fit {plan.hardware_name}:\n  " + "\n  ".join(lines)
    if plan.suggestions:
        text += "\nWould fit with:\n  " + "\n  ".join(plan.suggestions)
    else:
        text += "\nNothing orch can change makes it fit: pick smaller weights or more memory."
    raise BudgetError(text)
