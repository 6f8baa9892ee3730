"""Profile + hardware (+ GGUF header when present) → a frozen plan. Pure: no I/O here."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import jinja2

from orchestrator.autoplace import AutoPlacement, Candidate
from orchestrator.autoplace import choose as choose_placement
from orchestrator.ecmaregex import compile_pattern
from orchestrator.engines import engine_caps, known_flags
from orchestrator.errors import BudgetError
from orchestrator.memory.breakdown import GIB, MemoryEstimate
from orchestrator.memory.tensors import GgufHeader
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import LlamaEngine, ModelProfile, PodmanRuntime, VllmEngine
from orchestrator.render import display, redact, render_argv
from orchestrator.secrecy import (
    PODMAN_BOOL_SHORT,
    engine_arg_problems,
    env_problems,
    podman_arg_problems,
    redact_env,
)
from orchestrator.sizing import (
    DeviceBudget,
    budgets,
    estimate,
    gpus_for,
    largest,
    llama_config,
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
    "llama_config",
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
    def exposed(self) -> bool:
        """Whether the server listens beyond loopback (reachable from other machines)."""
        return not is_loopback(self.host)

    @property
    def listen(self) -> str:
        """Where the server listens, in words for ``orch plan``."""
        where = f"{_url_host(self.host, keep_any=True)}:{self.port}"
        if self.exposed:
            return f"{where}: reachable from other machines (publish.host)"
        return f"{where} (loopback only)"

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
            "env": redact_env(self.env),
            "secret_env": list(self.secret_env),
            "endpoint": self.endpoint,
            "listen": {"host": self.host, "port": self.port, "exposed": self.exposed},
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
    engine = resolved.profile.engine
    if isinstance(engine, LlamaEngine) and engine.placement == "auto":
        return choose_placement(resolved, model_tensors(resolved, header)[0]).chosen is not None
    memory, _, _ = estimate(resolved, header)
    return all(b.fits for b in budgets(memory, resolved.hardware))


def largest_fitting_ctx(resolved: ResolvedProfile, header: GgufHeader | None) -> int | None:
    """The largest ctx (a multiple of 256) that fits with every other setting unchanged."""
    engine = resolved.profile.engine
    assert isinstance(engine, LlamaEngine)
    steps = largest(
        1, engine.ctx // 256, lambda n: _fits(with_engine(resolved, ctx=n * 256), header)
    )
    return steps * 256 if steps else None


def suggest_llama(resolved: ResolvedProfile, header: GgufHeader | None) -> list[str]:
    """Changes that would make an over-budget llama.cpp plan fit."""
    engine = resolved.profile.engine
    assert isinstance(engine, LlamaEngine)
    auto = engine.placement == "auto"
    out: list[str] = []
    ctx = largest_fitting_ctx(resolved, header)
    if ctx:
        how = "with the placement orch chooses" if auto else "as configured"
        out.append(f"engine.ctx = {ctx} (the largest context that fits {how})")
    moe = resolved.architecture.moe is not None
    if moe and not auto and not engine.cpu_moe:
        if _fits(with_engine(resolved, cpu_moe=True, n_cpu_moe=None), header):
            out.append("engine.cpu_moe = true (experts in host RAM, attention on the GPU)")
    if engine.cache_type_k == "f16" and _fits(
        with_engine(resolved, cache_type_k="q8_0", cache_type_v="q8_0"), header
    ):
        out.append('engine.cache_type_k = engine.cache_type_v = "q8_0" (halves the KV cache)')
    return out


def suggest_vllm(resolved: ResolvedProfile, memory: MemoryEstimate) -> list[str]:
    """Changes that would let vLLM's KV pool hold ``max_model_len``."""
    engine = resolved.profile.engine
    assert isinstance(engine, VllmEngine)
    capacity = int(memory.facts.get("kv_pool_tokens", 0))
    if capacity >= engine.max_model_len:
        return []
    out = [f"engine.max_model_len = {capacity} (what the KV pool holds)"] if capacity else []
    if not engine.kv_cache_dtype.startswith("fp8"):
        out.append(f'engine.kv_cache_dtype = "fp8" (holds about {2 * capacity:,} tokens)')
    if engine.tensor_parallel_size == 1 and len(resolved.hardware.gpus) >= 2:
        out.append("engine.tensor_parallel_size = 2 (weights and KV split over two GPUs)")
    return out


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


def _container_model_path(resolved: ResolvedProfile) -> tuple[str, str]:
    """(host mount source, model path inside the container)."""
    model = resolved.profile.model
    host_path = PurePosixPath(model.path)
    root = PurePosixPath(model.mount_root) if model.mount_root else host_path.parent
    try:
        relative = host_path.relative_to(root)
    except ValueError:
        raise resolved.error(
            [f"model.path: {host_path} is not inside model.mount_root {root}"]
        ) from None
    if not root.is_absolute() or ":" in str(root) or "," in str(root):
        key = "model.mount_root" if model.mount_root else "model.path"
        raise resolved.error(
            [f"{key}: podman mounts {str(root)!r}, which must be absolute and hold no ':' or ','"]
        )
    return str(root), posixpath.join(CONTAINER_MODELS, str(relative))


def _plan_hash(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


ENGINE_LISTEN_FLAGS = frozenset({"--host", "--port", "--uds"})
"""Where the engine listens: orch renders them from ``publish``."""
PODMAN_NETWORK_FLAGS = frozenset(
    {"-p", "--publish", "-P", "--publish-all", "--expose", "--network", "--net", "--pod"}
)
PODMAN_OWNED_FLAGS = frozenset({"--name", "--label", "-l", "--env-host"})


def _check_extra_args(resolved: ResolvedProfile, extra: Sequence[str], kind: str) -> None:
    known = known_flags(kind)
    key = "engine.extra_args"
    problems = engine_arg_problems(extra, key)
    for i, arg in enumerate(extra):
        name = arg.split("=", 1)[0]
        if any(p.startswith(f"{key}[{i}]:") for p in problems):
            continue
        if name in ENGINE_LISTEN_FLAGS:
            problems.append(
                f"{key}[{i}]: {name} is orch's to set: where the server listens comes from "
                "publish.host and publish.port"
            )
        elif arg.startswith("-") and not arg.lstrip("-").replace(".", "").isdigit():
            if name not in known:
                problems.append(f"{key}[{i}]: {name} is not a {kind} server flag")
    if problems:
        raise resolved.error(problems)


def _podman_flags(arg: str) -> list[str]:
    """The podman flags one argument sets: ``--x=v`` → ``--x``; ``-dp`` → ``-d``, ``-p``.

    In a cluster the first letter that takes a value ends it: ``-v/tmp/p:/x`` is ``-v``.
    """
    name = arg.split("=", 1)[0]
    if name.startswith("--") or not name.startswith("-") or len(name) <= 2:
        return [name]
    flags = []
    for letter in name[1:]:
        flags.append(f"-{letter}")
        if letter not in PODMAN_BOOL_SHORT:
            break
    return flags


def _check_runtime(resolved: ResolvedProfile) -> None:
    """Secrets, publishing and orch's own flags smuggled through the runtime's settings."""
    runtime = resolved.profile.runtime
    problems = env_problems(runtime.env, "runtime.env")
    if isinstance(runtime, PodmanRuntime):
        key = "runtime.extra_args"
        problems += podman_arg_problems(runtime.extra_args, key)
        for i, arg in enumerate(runtime.extra_args):
            flags = _podman_flags(arg)
            if any(f in PODMAN_NETWORK_FLAGS for f in flags):
                problems.append(
                    f"{key}[{i}]: {arg.split('=', 1)[0]} would publish the server or change its "
                    "network behind orch's back; set publish.host / publish.port (and "
                    "runtime.network), which orch shows in plan"
                )
            elif any(f in PODMAN_OWNED_FLAGS for f in flags):
                problems.append(
                    f"{key}[{i}]: {arg.split('=', 1)[0]} is orch's to set (the container's "
                    "name, labels and environment)"
                )
    if problems:
        raise resolved.error(problems)


def _check_devices(resolved: ResolvedProfile, allowed: list[str]) -> None:
    """The engine must be able to reach every GPU the plan counts, and no other."""
    engine = resolved.profile.engine
    if not isinstance(engine, LlamaEngine):
        return
    problems = []
    why = _no_gpu_reason(resolved)
    for i, rule in enumerate(engine.override_tensors):
        if rule.device != "CPU" and rule.device not in allowed:
            problems.append(
                f"engine.override_tensors[{i}].device: {rule.device} is not available to this "
                f"profile ({why}); the plan could not count what it holds"
            )
    if not allowed and engine.gpu_layers:
        problems.append(
            f"engine.gpu_layers: {engine.gpu_layers} layers offloaded, but this profile has no "
            f"GPU ({why}); set gpu_layers = 0 or give it a GPU"
        )
    if engine.main_gpu is not None and f"CUDA{engine.main_gpu}" not in allowed:
        problems.append(f"engine.main_gpu: GPU {engine.main_gpu} is not available ({why})")
    if engine.tensor_split and len(engine.tensor_split) > len(allowed):
        problems.append(
            f"engine.tensor_split: {len(engine.tensor_split)} parts for {len(allowed)} GPU(s) "
            f"this profile may use ({why})"
        )
    if problems:
        raise resolved.error(problems)


def _no_gpu_reason(resolved: ResolvedProfile) -> str:
    profile = resolved.profile
    runtime = profile.runtime
    if isinstance(runtime, PodmanRuntime) and not any(
        "gpu" in d or "nvidia" in d for d in runtime.devices
    ):
        return "the container gets no GPU device: runtime.devices"
    if profile.gpus is not None:
        return f"gpus = {list(profile.gpus)}"
    if not resolved.hardware.gpus:
        return f"hardware {resolved.hardware_name!r} has none"
    return f"hardware {resolved.hardware_name!r} has " + ", ".join(
        f"CUDA{g.index}" for g in resolved.hardware.gpus
    )


def _pattern_warnings(engine: LlamaEngine) -> list[str]:
    return [
        f"engine.override_tensors[{i}].pattern {rule.pattern!r}: a repeat inside a repeat; "
        "the engine's std::regex backtracks and may take very long on it at load"
        for i, rule in enumerate(engine.override_tensors)
        if compile_pattern(rule.pattern).nested_repeat
    ]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    if isinstance(resolved.profile.engine, LlamaEngine):
        if resolved.profile.engine.placement == "auto":
            auto = choose_placement(resolved, model_tensors(resolved, header)[0])
            resolved = with_engine(resolved, **_applied(auto).settings)
    profile = resolved.profile
    engine = profile.engine
    runtime = profile.runtime
    host = profile.publish.host or default_bind_host
    port = profile.publish.port
    is_podman = isinstance(runtime, PodmanRuntime)
    warnings: list[str] = []
    if profile.publish.host is None and not is_loopback(host):
        raise resolved.error(
            [
                f"publish.host: not set, and orch's default_bind_host ({host}) is reachable "
                f'from other machines; say so in the profile: publish.host = "{host}"'
            ]
        )
    _check_runtime(resolved)

    secret_env: list[str] = []
    api_key_file = ""
    api_key_mount = ""
    key_env_name = "VLLM_API_KEY" if isinstance(engine, VllmEngine) else "LLAMA_API_KEY"
    vllm_key_file = isinstance(engine, VllmEngine) and profile.secrets.api_key_file
    if profile.secrets.api_key_env or vllm_key_file:
        secret_env.append(key_env_name)  # vLLM has no key-file flag: orch reads the file
    elif profile.secrets.api_key_file:
        if is_podman:
            api_key_file = CONTAINER_SECRET
            api_key_mount = f"{profile.secrets.api_key_file}:{CONTAINER_SECRET}:ro,Z"
        else:
            api_key_file = profile.secrets.api_key_file

    if isinstance(runtime, PodmanRuntime) and isinstance(engine, LlamaEngine):
        mount_source, model_path = _container_model_path(resolved)
        model_mount = f"{mount_source}:{CONTAINER_MODELS}:{profile.model.mount_options}"
    else:
        model_path = profile.model.path or profile.model.repo
        model_mount = ""
    if isinstance(runtime, PodmanRuntime) and runtime.network != "host":
        # the container's own network: podman publishes it on host:port only (-p)
        bind_host, bind_port = "0.0.0.0", runtime.container_port
    else:
        bind_host, bind_port = host, port  # the host's network: listen on publish.host itself

    if isinstance(engine, LlamaEngine):
        caps = engine_caps(engine.kind, engine.version)
        if engine.grouped_expert_routing and not caps.grouped_expert_routing:
            raise resolved.error(
                [
                    "engine.grouped_expert_routing: -ger is ik_llama.cpp only "
                    f"(engine is {engine.kind})"
                ],
            )
        if profile.secrets.api_key_env and not caps.api_key_env:
            raise resolved.error(
                [
                    f"secrets.api_key_env: {engine.kind} reads no API-key variable, so the "
                    "server would start without authentication; use secrets.api_key_file"
                ],
            )
        if engine.cache_ram_mib is not None and not caps.cache_ram:
            raise resolved.error(
                [f"engine.cache_ram_mib: --cache-ram is not in {engine.kind} {engine.version}"],
            )
        _check_extra_args(resolved, engine.extra_args, engine.kind)
        warnings += _pattern_warnings(engine)
        template = "engines/llama-server.j2"
        ot = ",".join(f"{r.pattern}={r.device}" for r in engine.override_tensors)
    else:
        caps = engine_caps("vllm", engine.version)
        _check_extra_args(resolved, engine.extra_args, "vllm")
        template = "engines/vllm.j2"
        ot = ""
        if is_podman:
            warnings.append("vLLM in podman: the image must provide `vllm` as its entrypoint")
    # profile.gpus restricts the engine itself, not only orch's budget: gpus = [] is "none"
    allowed = [name for name, _ in gpus_for(profile, resolved.hardware)]
    _check_devices(resolved, allowed)
    devices = ",".join(allowed or ["none"]) if profile.gpus is not None else ""
    if allowed and devices and is_podman and isinstance(engine, VllmEngine):
        warnings.append(
            "gpus: vLLM in podman uses every GPU in runtime.devices; list only "
            f"{devices} there (e.g. nvidia.com/gpu={devices.removeprefix('CUDA')})"
        )
    engine_ctx = {
        "devices": devices,
        "e": engine,
        "caps": caps,
        "bind_host": bind_host,
        "bind_port": bind_port,
        "model_path": model_path,
        "override_tensors": ot,
        "api_key_file": api_key_file,
    }
    engine_rendered = render_argv(env, template, engine_ctx)

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
            "pass_env": profile.secrets.pass_env,
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
        process_env = runtime_env
        if isinstance(engine, VllmEngine) and profile.gpus is not None:
            indices = ",".join(name.removeprefix("CUDA") for name in allowed)
            process_env = {**runtime_env, "CUDA_VISIBLE_DEVICES": indices}

    memory, weights_source, model_bytes = estimate(resolved, header)
    device_budgets = budgets(memory, resolved.hardware)
    if auto is not None and auto.chosen is None:
        device_budgets = _applied(auto).budget  # over budget once auto's GPU margin is kept
    suggestions: list[str] = []
    if isinstance(engine, VllmEngine):
        suggestions = suggest_vllm(resolved, memory)
    elif not all(b.fits for b in device_budgets):
        suggestions = suggest_llama(requested, header)

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


def _url_host(host: str, *, keep_any: bool = False) -> str:
    if host in ("0.0.0.0", "::", "") and not keep_any:
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
    if isinstance(engine, VllmEngine):
        capacity = int(plan.memory.facts.get("kv_pool_tokens", 0))
        if capacity < engine.max_model_len:
            lines.append(
                f"vLLM KV pool holds {capacity:,} tokens < max_model_len {engine.max_model_len:,}"
            )
    if not lines:
        return
    text = f"{plan.source}: does not fit {plan.hardware_name}:\n  " + "\n  ".join(lines)
    if plan.suggestions:
        text += "\nWould fit with:\n  " + "\n  ".join(plan.suggestions)
    else:
        text += "\nNothing orch can change makes it fit: pick smaller weights or more memory."
    raise BudgetError(text)
