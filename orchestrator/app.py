"""Wiring shared by the CLI commands: settings → catalog → (GGUF header) → plan → live checks."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import jinja2

from orchestrator.engines import adapter_for
from orchestrator.errors import PreflightError, ProfileError
from orchestrator.hfcache import HfWeights, hub_dir, locate
from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.memory.gguf_file import GgufError
from orchestrator.memory.tensors import GgufHeader, read_gguf, split_paths
from orchestrator.names import require_profile_name
from orchestrator.plan import Plan, build_plan
from orchestrator.probe import HostState, missing_files, port_in_use
from orchestrator.profiles.loader import Catalog, ResolvedProfile
from orchestrator.render import make_environment
from orchestrator.settings import Settings


@dataclass
class App:
    """Settings plus the things built from them once per command."""

    settings: Settings

    @property
    def catalog(self) -> Catalog:
        """The profiles tree."""
        return Catalog(self.settings.profile_folders())

    @cached_property
    def templates(self) -> jinja2.Environment:
        """The strict Jinja environment (one per command, so templates compile once)."""
        if not self.settings.templates_dir.is_dir():
            raise ProfileError(
                "orch settings", [f"templates_dir: {self.settings.templates_dir} is not a folder"]
            )
        return make_environment(self.settings.templates_dir)

    def resolve(self, name: str, hardware: str | None = None) -> ResolvedProfile:
        """Load a profile by name, with a clear error listing the available ones."""
        require_profile_name(name, "orch", "profile")
        catalog = self.catalog
        if name not in catalog.model_names():
            available = ", ".join(catalog.model_names()) or "none"
            folders = ", ".join(str(root / "models") for root in catalog.roots)
            raise ProfileError(folders, [f"no profile {name!r} (available: {available})"])
        return catalog.load(name, hardware)

    def plan(self, name: str, *, read_header: bool, hardware: str | None = None) -> Plan:
        """Resolve and plan one profile; read its GGUF header when asked and present."""
        return self.plan_for(self.resolve(name, hardware), read_header=read_header)

    def plan_for(self, resolved: ResolvedProfile, *, read_header: bool) -> Plan:
        """Plan an already resolved profile (so callers that need both load it once).

        A ``gpus = "any"`` profile is planned on the first GPU whose budget it fits. A profile's
        ``hf_repo`` is looked up in the host's Hugging Face cache either way (``plan --dry-run``
        shows the snapshot path too); the GGUF header only when asked.
        """
        choices = gpu_choices(resolved)
        if len(choices) > 1:
            plans = [self.plan_for(choice, read_header=read_header) for choice in choices]
            return next((p for p in plans if p.fits), plans[0])
        resolved = choices[0]
        weights = hf_weights(resolved)
        header = self.header(resolved, weights) if read_header else None
        return build_plan(
            resolved,
            self.templates,
            default_bind_host=self.settings.default_bind_host,
            podman_binary=self.settings.podman_binary,
            header=header,
            weights=weights,
        )

    @staticmethod
    def header(resolved: ResolvedProfile, weights: HfWeights | None = None) -> GgufHeader | None:
        """The GGUF header if every split file exists, else None."""
        if not adapter_for(resolved.profile.engine).reads_gguf:
            return None
        first = model_path(resolved, weights)
        files = split_paths(first)
        if missing_files(files):
            return None
        try:
            return read_gguf(first)
        except (GgufError, OSError) as exc:
            where = "model.hf_file" if weights is not None else "model.path"
            bad = exc.path if isinstance(exc, GgufError) else first
            raise PreflightError(
                f"{bad} is not a readable GGUF file ({exc}); re-download it or fix {where}"
            ) from None


def gpu_choices(resolved: ResolvedProfile) -> list[ResolvedProfile]:
    """One profile per GPU for ``gpus = "any"`` (each with ``gpus = [i]``), else itself."""
    if resolved.profile.gpus != "any" or not resolved.hardware.gpus:
        return [resolved]
    out = []
    for gpu in sorted(resolved.hardware.gpus, key=lambda g: g.index):
        profile = resolved.profile.model_copy(update={"gpus": (gpu.index,)})
        out.append(replace(resolved, profile=profile))
    return out


def hf_weights(resolved: ResolvedProfile) -> HfWeights | None:
    """Where the profile's ``hf_repo`` is in this host's Hugging Face cache, read offline.

    The cache is huggingface_hub's for orch's environment (``HF_HUB_CACHE``, ``HF_HOME``).
    None for a profile that names a path.
    """
    model = resolved.profile.model
    if not model.hf_repo:
        return None
    return locate(model, hub_dir(os.environ))


def model_path(resolved: ResolvedProfile, weights: HfWeights | None = None) -> Path:
    """The profile's GGUF on this host: its snapshot path, or ``model.path`` with ``~``."""
    if weights is not None:
        return Path(weights.path)
    return Path(resolved.profile.model.path).expanduser()


def live_problems(
    plan: Plan, resolved: ResolvedProfile, host: HostState, *, own_port: int | None = None
) -> list[str]:
    """What stops this plan on this machine now: files, port, free memory.

    ``own_port``: the port this profile's own running instance holds, which is no problem.
    """
    return file_problems(plan) + resource_problems(plan, resolved, host, own_port=own_port)


def file_problems(plan: Plan) -> list[str]:
    """Model files the plan needs that are missing (vLLM downloads its own)."""
    if not adapter_for(plan.profile.engine).reads_gguf:
        return []
    if plan.weights is not None:
        if plan.weights.cached:
            return []
        return [f"model not in the Hugging Face cache: {plan.weights.missing_text()}"]
    files = split_paths(Path(plan.model_file).expanduser())
    return [
        f"model file missing: {path} (model.path in {plan.source})" for path in missing_files(files)
    ]


def resource_problems(
    plan: Plan, resolved: ResolvedProfile, host: HostState, *, own_port: int | None = None
) -> list[str]:
    """The port and the free memory: what a running instance may be holding."""
    problems: list[str] = []
    if plan.port != own_port and port_in_use(plan.host, plan.port):
        problems.append(
            f"port {plan.host}:{plan.port} is already in use (publish.port in {resolved.source})"
        )
    for device, need in plan.memory.devices.items():
        if device == "CPU":
            if need.total > host.ram_available_bytes:
                problems.append(
                    f"CPU: needs {need.total / GIB:.2f} GiB RAM, "
                    f"{host.ram_available_bytes / GIB:.2f} GiB available now"
                )
            continue
        index = int(device.removeprefix("CUDA"))
        gpu = next((g for g in host.gpus if g.index == index), None)
        if gpu is None:
            note = f" ({host.gpu_note})" if host.gpu_note else ""
            problems.append(f"{device}: not present on this machine{note}")
        elif need.total > gpu.free_mib * MIB:
            problems.append(
                f"{device}: needs {need.total / MIB:,.0f} MiB, {gpu.free_mib:,} MiB free now"
            )
    return problems


def require_live(plan: Plan, resolved: ResolvedProfile, host: HostState) -> None:
    """Raise PreflightError listing every live problem."""
    problems = live_problems(plan, resolved, host)
    if problems:
        raise PreflightError(f"{plan.name}: cannot start here:\n  " + "\n  ".join(problems))
