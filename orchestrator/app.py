"""Wiring shared by the CLI commands: settings → catalog → (GGUF header) → plan → live checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import jinja2

from orchestrator.errors import PreflightError, ProfileError
from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.memory.tensors import GgufHeader, read_gguf, split_paths
from orchestrator.names import require_profile_name
from orchestrator.plan import Plan, build_plan
from orchestrator.probe import HostState, missing_files, port_in_use
from orchestrator.profiles.loader import Catalog, ResolvedProfile
from orchestrator.profiles.schema import VllmEngine
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

        A ``gpus = "any"`` profile is planned on the first GPU whose budget it fits.
        """
        choices = gpu_choices(resolved)
        if len(choices) > 1:
            plans = [self.plan_for(choice, read_header=read_header) for choice in choices]
            return next((p for p in plans if p.fits), plans[0])
        resolved = choices[0]
        header = self.header(resolved) if read_header else None
        return build_plan(
            resolved,
            self.templates,
            default_bind_host=self.settings.default_bind_host,
            podman_binary=self.settings.podman_binary,
            header=header,
        )

    @staticmethod
    def header(resolved: ResolvedProfile) -> GgufHeader | None:
        """The GGUF header if every split file exists, else None."""
        if isinstance(resolved.profile.engine, VllmEngine) or not resolved.profile.model.path:
            return None
        first = model_path(resolved)
        files = split_paths(first)
        if missing_files(files):
            return None
        try:
            return read_gguf(first)
        except (ValueError, OSError) as exc:
            raise PreflightError(
                f"{first} is not a readable GGUF file ({exc}); re-download it or fix model.path"
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


def model_path(resolved: ResolvedProfile) -> Path:
    """The profile's GGUF path with ``~`` expanded."""
    return Path(resolved.profile.model.path).expanduser()


def live_problems(
    plan: Plan, resolved: ResolvedProfile, host: HostState, *, own_port: int | None = None
) -> list[str]:
    """What stops this plan on this machine now: files, port, free memory.

    ``own_port``: the port this profile's own running instance holds, which is no problem.
    """
    return file_problems(resolved) + resource_problems(plan, resolved, host, own_port=own_port)


def file_problems(resolved: ResolvedProfile) -> list[str]:
    """Model files the profile names that are missing."""
    if isinstance(resolved.profile.engine, VllmEngine):
        return []
    files = split_paths(model_path(resolved))
    return [
        f"model file missing: {path} (model.path in {resolved.source})"
        for path in missing_files(files)
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
