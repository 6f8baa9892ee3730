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
from orchestrator.engines import EngineAdapter, adapter_for
from orchestrator.errors import BudgetError
from orchestrator.hfcache import HfWeights, hub_dir, unresolved
from orchestrator.memory.breakdown import GIB, MemoryEstimate
from orchestrator.memory.tensors import GgufHeader
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import ModelProfile, PodmanRuntime
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
    model_tensors,
    with_engine,
)
from orchestrator.speed import SpeedEstimate, predict_profile

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
    weights: HfWeights | None = None
    """Where ``hf_repo`` resolved in the host's Hugging Face cache (None: not from a cache)."""
    model_file: str = ""
    """The GGUF on the host (a split's first part); "" for a vLLM repo."""
    speed: SpeedEstimate | None = None
    """Predicted decode and prefill speed (``orchestrator.speed``)."""

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
            "model_file": self.model_file,
            "hf": _weights_json(self.weights),
            "speed": self.speed.to_json() if self.speed else None,
        }


def _weights_json(weights: HfWeights | None) -> dict[str, Any] | None:
    if weights is None:
        return None
    return {
        "repo": weights.repo,
        "revision": weights.revision,
        "commit": weights.commit or None,
        "file": weights.file or None,
        "repo_dir": weights.repo_dir,
        "path": weights.path,
        "cached": weights.cached,
        "missing": list(weights.missing),
        "download": weights.download_command() if weights.missing else None,
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


@dataclass(frozen=True)
class _ModelArgs:
    """How the engine is pointed at the weights: its model argument, mounts and variables."""

    model_path: str
    mounts: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def _model_args(resolved: ResolvedProfile, weights: HfWeights | None) -> _ModelArgs:
    """The model argument, podman mounts and environment for the profile's weights."""
    profile = resolved.profile
    model, runtime = profile.model, profile.runtime
    podman = isinstance(runtime, PodmanRuntime)
    offline = (("HF_HUB_OFFLINE", "1"),) if weights is not None and weights.cached else ()
    if not adapter_for(profile.engine).reads_gguf:  # vLLM: a model folder or a hub repo
        if weights is None:  # a local model folder
            if not podman:
                return _ModelArgs(model.path)
            source = _mount_source(resolved, "model.path", PurePosixPath(model.path))
            inside = posixpath.join(CONTAINER_MODELS, PurePosixPath(model.path).name)
            return _ModelArgs(inside, (f"{source}:{inside}:{model.mount_options}",))
        if not podman:
            return _ModelArgs(weights.repo, env=offline)
        assert isinstance(runtime, PodmanRuntime)
        # the whole hub at the container's HF_HOME/hub: vLLM finds the repo as it would
        # at home; read-only once cached (offline), writable when it must download
        options = "ro,z" if weights.cached else "z"
        mount = f"{weights.hub}:{runtime.hf_home}/hub:{options}"
        return _ModelArgs(weights.repo, (mount,), (("HF_HOME", runtime.hf_home), *offline))
    if weights is None:
        if not podman:
            return _ModelArgs(model.path)
        source, inside = _container_model_path(resolved)
        return _ModelArgs(inside, (f"{source}:{CONTAINER_MODELS}:{model.mount_options}",))
    if not podman:
        return _ModelArgs(weights.path)
    # the repo folder, not the snapshot: the snapshot's files are links into ../../blobs/
    inside = posixpath.join(CONTAINER_MODELS, weights.relative_path)
    return _ModelArgs(inside, (f"{weights.repo_dir}:{CONTAINER_MODELS}:{model.mount_options}",))


def _locks_weights(profile: ModelProfile) -> bool:
    """Whether the engine will mlock the weights (llama-server's ``load_mode = "mlock"``)."""
    return adapter_for(profile.engine).locks_memory(profile.engine)


def _lock_caps(profile: ModelProfile) -> list[str]:
    """Capabilities a container needs to lock its weights.

    The kernel lets mlock() past RLIMIT_MEMLOCK only with CAP_IPC_LOCK (mm/mlock.c), and
    podman's default set lacks it. Rootful podman: the capability alone lets any size lock.
    Rootless: the capability does not count outside the user namespace, so the
    ``--ulimit memlock=-1:-1`` rendered beside it is what lets the lock through, as far as
    the user's own hard limit allows (the systemd unit says so).
    """
    runtime = profile.runtime
    if not _locks_weights(profile) or not isinstance(runtime, PodmanRuntime):
        return []
    return [] if "IPC_LOCK" in runtime.cap_add else ["IPC_LOCK"]


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
    key = "model.mount_root" if model.mount_root else "model.path"
    return _mount_source(resolved, key, root), posixpath.join(CONTAINER_MODELS, str(relative))


def _mount_source(resolved: ResolvedProfile, key: str, folder: PurePosixPath) -> str:
    """A host folder for podman's ``-v SOURCE:TARGET:OPTIONS``, which ``:`` or ``,`` would split."""
    if not folder.is_absolute() or ":" in str(folder) or "," in str(folder):
        raise resolved.error(
            [f"{key}: podman mounts {str(folder)!r}, which must be absolute and hold no ':' or ','"]
        )
    return str(folder)


def _plan_hash(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


ENGINE_LISTEN_FLAGS = ("--host", "--port", "--uds")
"""Where the engine listens (any spelling): orch renders it from ``publish``."""
PODMAN_NETWORK_FLAGS = frozenset(
    {"-p", "--publish", "-P", "--publish-all", "--expose", "--network", "--net", "--pod"}
)
PODMAN_OWNED_FLAGS = frozenset({"--name", "--label", "-l", "--env-host"})


def _check_extra_args(
    resolved: ResolvedProfile, extra: Sequence[str], adapter: EngineAdapter
) -> None:
    catalogue = adapter.catalogue
    known = catalogue.spellings
    kind = adapter.kind
    listen = {s for flag in ENGINE_LISTEN_FLAGS for s in catalogue.aliases(flag)}
    key = "engine.extra_args"
    problems = engine_arg_problems(extra, key)
    for i, arg in enumerate(extra):
        name = arg.split("=", 1)[0]
        if any(p.startswith(f"{key}[{i}]:") for p in problems):
            continue
        if name in listen:
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
    weights: HfWeights | None = None,
) -> Plan:
    """Decide everything about one launch. Raises ProfileError / TemplateError on bad input.

    ``weights``: where the profile's ``hf_repo`` is in the host's cache (``hfcache.locate``);
    without it, a Hugging Face profile is planned as not yet looked up.
    """
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
    key_variable = adapter.api_key_variable
    if profile.secrets.api_key_env and key_variable is None:
        raise resolved.error(
            [
                f"secrets.api_key_env: {engine.kind} reads no API-key variable, so the "
                "server would start without authentication; use secrets.api_key_file"
            ]
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

    if profile.model.hf_repo and weights is None:
        weights = unresolved(profile.model, hub_dir({}))
    model_args = _model_args(resolved, weights)
    model_path = model_args.model_path
    if isinstance(runtime, PodmanRuntime) and runtime.network != "host":
        # the container's own network: podman publishes it on host:port only (-p)
        bind_host, bind_port = "0.0.0.0", runtime.container_port
    else:
        bind_host, bind_port = host, port  # the host's network: listen on publish.host itself
    if weights is not None and not weights.cached:
        then = "not startable" if adapter.reads_gguf else f"{adapter.label} downloads it at start"
        warnings.append(f"model: {weights.missing_text()} ({then})")

    problems = adapter.settings_problems(engine)
    if problems:
        raise resolved.error(problems)
    _check_extra_args(resolved, engine.extra_args, adapter)
    # profile.gpus restricts the engine itself, not only orch's budget: gpus = [] is none
    allowed = [name for name, _ in gpus_for(profile, resolved.hardware)]
    problems = adapter.device_problems(engine, allowed, _no_gpu_reason(resolved))
    if problems:
        raise resolved.error(problems)
    devices = ",".join(allowed) if profile.gpus is not None and allowed else ""
    warnings.extend(adapter.plan_warnings(profile, devices=devices, podman=is_podman))
    off_gpu_env: dict[str, str] = {}
    off_gpu = None
    if allowed or profile.gpus is not None:
        # nothing on a GPU (or no GPU allowed at all): keep the CUDA build off them, or it
        # opens the first one anyway (a CUDA context plus a compute buffer for the batches it
        # offloads)
        off_gpu = adapter.off_gpu(engine, gpus_allowed=bool(allowed))
    if off_gpu is not None:
        devices = off_gpu.device
        off_gpu_env = dict(off_gpu.env)
    engine_ctx = {
        **adapter.template_context(engine),
        "devices": devices,
        "bind_host": bind_host,
        "bind_port": bind_port,
        "model_path": model_path,
        "serve": not is_podman,
        "revision": profile.model.revision if profile.model.hf_repo else "main",
        "api_key_file": api_key_file,
        # the model id clients see: the profile name unless the profile names one itself
        "model_id": "" if adapter.own_model_id(engine) is not None else resolved.name,
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
        "secret_env": [*secret_env, *profile.secrets.pass_env],
        "model": [model_args.mounts, model_args.env],
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
            "cap_add": [*runtime.cap_add, *_lock_caps(profile)],
            "memlock": _locks_weights(profile),
            "model_mounts": model_args.mounts,
            "container_env": {**dict(model_args.env), **off_gpu_env, **runtime.env},
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
        limited = bool(devices) and off_gpu is None
        indices = [int(name.removeprefix("CUDA")) for name in allowed] if limited else []
        process_env = adapter.process_env(
            {**dict(model_args.env), **off_gpu_env, **runtime_env}, indices
        )

    memory, weights_source, model_bytes = estimate(resolved, header)
    speed = predict_profile(resolved, model_tensors(resolved, header)[0])
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
        weights=weights,
        model_file=weights.path if weights is not None and weights.file else profile.model.path,
        speed=speed,
    )


def _applied(auto: AutoPlacement) -> Candidate:
    """The chosen candidate, or (nothing fits) the one over budget by the least."""
    if auto.chosen is not None:
        return auto.chosen
    return min(auto.considered, key=lambda c: sum(b.over_by for b in c.budget))


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
    lines.extend(adapter_for(engine).capacity_problems(engine, plan.memory))
    if not lines:
        return
    text = f"{plan.source}: does not fit {plan.hardware_name}:\n  " + "\n  ".join(lines)
    if plan.suggestions:
        text += "\nWould fit with:\n  " + "\n  ".join(plan.suggestions)
    else:
        text += "\nNothing orch can change makes it fit: pick smaller weights or more memory."
    raise BudgetError(text)
