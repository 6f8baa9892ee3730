"""``placement = "auto"``: the llama-server placement that decodes fastest and still fits.

Each strategy is searched for its best setting within the hardware budget:

- every layer on the GPU(s);
- the experts of the fewest layers in host RAM (``--n-cpu-moe N``);
- with several GPUs, each GPU holding the experts of as many of its own layers as fit, the rest
  in host RAM (``-ot`` rules before ``--cpu-moe``, like seed 003);
- every expert in host RAM (``--cpu-moe``), with as many layers on the GPU(s) as fit;
- plain partial offload (``-ngl N``), and CPU only.

Strategies are ranked by the decode speed ``orchestrator.speed`` predicts for them (the bytes
each device reads per token at its rate, graph nodes, splits between devices; hardware
``[decode]``). Attention and shared weights are read for every token, experts only in part, so
the GPU bytes go to attention first.
A candidate fits only with ``budget.auto_margin_fraction`` of each GPU's budget left free. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.engines import adapter_for, build_number, llama_adapter
from orchestrator.memory.breakdown import GIB, MemoryEstimate
from orchestrator.memory.llama import CPU, EXPERT_REGEX, estimate_llama, place
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import (
    AUTO_PLACED,
    OverrideTensor,
)
from orchestrator.sizing import (
    DeviceBudget,
    budgets,
    largest,
    llama_config_for,
    smallest,
    with_engine,
)
from orchestrator.speed import decode_seconds, llama_workload, run_for

ALL_LAYERS = 999


@dataclass(frozen=True)
class Candidate:
    """One placement orch considered: its engine settings, memory and estimated speed."""

    strategy: str
    what: str
    settings: Mapping[str, Any]
    flags: str
    budget: tuple[DeviceBudget, ...]
    read: Mapping[str, int]
    tokens_per_s: float

    @property
    def fits(self) -> bool:
        """Whether every device is within budget."""
        return all(b.fits for b in self.budget)

    @property
    def why_not(self) -> str:
        """``CUDA0 over by 3.20 GiB`` for each device over budget ('' if it fits)."""
        return "; ".join(
            f"{b.device} over by {b.over_by / GIB:.2f} GiB" for b in self.budget if not b.fits
        )

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form for ``plan --json``."""
        return {
            "strategy": self.strategy,
            "what": self.what,
            "flags": self.flags,
            "fits": self.fits,
            "why_not": self.why_not,
            "need": {b.device: b.need for b in self.budget},
            "read_per_token": dict(self.read),
            "est_tokens_per_s": round(self.tokens_per_s, 2),
        }


@dataclass(frozen=True)
class AutoPlacement:
    """The chosen placement (None if none fits) and every candidate considered."""

    chosen: Candidate | None
    considered: tuple[Candidate, ...]

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form for ``plan --json``."""
        return {
            "chosen": self.chosen.strategy if self.chosen else None,
            "considered": [c.to_json() for c in self.considered],
        }


def flags_text(settings: Mapping[str, Any]) -> str:
    """The llama-server flags a candidate's settings render to."""
    parts: list[str] = []
    if settings.get("gpu_layers") is not None:
        parts.append(f"-ngl {settings['gpu_layers']}")
    rules: Sequence[OverrideTensor] = settings.get("override_tensors", ())
    if rules:
        parts.append("-ot " + ",".join(f"{r.pattern}={r.device}" for r in rules))
    if settings.get("n_cpu_moe"):
        parts.append(f"--n-cpu-moe {settings['n_cpu_moe']}")
    if settings.get("cpu_moe"):
        parts.append("--cpu-moe")
    return " ".join(parts)


def as_auto(resolved: ResolvedProfile) -> ResolvedProfile:
    """``resolved`` with ``placement = "auto"`` and its manual placement settings cleared."""
    if not adapter_for(resolved.profile.engine).places_layers:
        return resolved  # vLLM places by tensor parallelism, not by layer
    return with_engine(resolved, placement="auto", **_CLEARED)


_CLEARED: dict[str, Any] = {
    "gpu_layers": None,
    "cpu_moe": False,
    "n_cpu_moe": None,
    "override_tensors": (),
    "tensor_split": (),
}
assert set(_CLEARED) == set(AUTO_PLACED)


class _Search:
    """Memory and speed of placements of one profile, with its other settings fixed."""

    def __init__(self, resolved: ResolvedProfile, tensors: Sequence[Tensor]) -> None:
        self.base = with_engine(resolved, **_CLEARED)
        self.arch = resolved.architecture
        self.hardware = resolved.hardware
        self.tensors = tensors
        self.run = run_for(resolved)

    def memory(self, settings: Mapping[str, Any]) -> tuple[MemoryEstimate, Any]:
        cfg = llama_config_for(with_engine(self.base, **settings))
        return estimate_llama(self.arch, self.tensors, cfg), cfg

    def budget(self, settings: Mapping[str, Any]) -> tuple[DeviceBudget, ...]:
        return self.with_margin(budgets(self.memory(settings)[0], self.hardware))

    def with_margin(self, found: tuple[DeviceBudget, ...]) -> tuple[DeviceBudget, ...]:
        """GPU capacities less the auto-placement margin."""
        keep = 1.0 - self.hardware.budget.auto_margin_fraction
        return tuple(
            b if b.device == CPU else DeviceBudget(b.device, b.need, int(b.capacity * keep))
            for b in found
        )

    def gpus_fit(self, settings: Mapping[str, Any], only: str | None = None) -> bool:
        return all(
            b.fits
            for b in self.budget(settings)
            if b.device != CPU and (only is None or b.device == only)
        )

    def candidate(self, strategy: str, what: str, settings: Mapping[str, Any]) -> Candidate:
        memory, cfg = self.memory(settings)
        placed = place(self.tensors, self.arch.n_layer, cfg)
        engine = self.base.profile.engine
        work = llama_workload(
            self.arch, self.tensors, placed, cfg, engine.kind, build_number(engine.version)
        )
        read = {device: int(sum(w.weights.values())) for device, w in work.devices.items()}
        return Candidate(
            strategy=strategy,
            what=what,
            settings=dict(settings),
            flags=flags_text(settings),
            budget=self.with_margin(budgets(memory, self.hardware)),
            read=read,
            tokens_per_s=1.0 / decode_seconds(work, self.hardware, self.run, 0),
        )

    def layer_gpus(self) -> dict[int, str]:
        """Which GPU each block sits on when every layer is offloaded."""
        _, cfg = self.memory({"gpu_layers": ALL_LAYERS})
        placed = place(self.tensors, self.arch.n_layer, cfg)
        return placed.layer_device


def _expert_rules(layers: Sequence[int], device: str) -> OverrideTensor:
    alternatives = "|".join(str(i) for i in layers)
    return OverrideTensor(pattern=rf"blk\.({alternatives}){EXPERT_REGEX}", device=device)


def _gpu_experts(search: _Search, gpus: Sequence[str]) -> Candidate:
    """Each GPU keeps the experts of as many of its own layers as fit; the rest go to RAM."""
    layer_gpu = search.layer_gpus()
    moe_layers = [i for i in range(search.arch.n_layer) if search.arch.is_moe_layer(i)]
    rules: list[OverrideTensor] = []
    kept: list[str] = []
    for gpu in gpus:
        own = [i for i in moe_layers if layer_gpu.get(i) == gpu]

        def fits(n: int, own: list[int] = own, gpu: str = gpu) -> bool:
            extra = (_expert_rules(own[:n], gpu),) if n else ()
            settings = {"gpu_layers": ALL_LAYERS, "cpu_moe": True, "override_tensors": extra}
            return search.gpus_fit(settings, only=gpu)

        count = largest(0, len(own), fits) or 0
        if count:
            rules.append(_expert_rules(own[:count], gpu))
            kept.append(f"{gpu} {count}")
    settings = {"gpu_layers": ALL_LAYERS, "cpu_moe": True, "override_tensors": tuple(rules)}
    what = "each GPU keeps its own layers' experts as far as they fit (" + (
        ", ".join(kept) or "none"
    )
    return search.candidate("gpu-experts", what + " layers), the rest in host RAM", settings)


def choose(resolved: ResolvedProfile, tensors: Sequence[Tensor]) -> AutoPlacement:
    """Search every strategy and pick the fastest one that fits."""
    caps = llama_adapter(resolved.profile.engine).caps(resolved.profile.engine.version)
    search = _Search(resolved, tensors)
    arch = search.arch
    gpus = sorted({b.device for b in search.budget({"gpu_layers": ALL_LAYERS})} - {CPU})
    considered: list[Candidate] = []
    if not gpus:
        considered.append(search.candidate("cpu", "CPU only (no GPU)", {"gpu_layers": 0}))
        return _pick(considered)

    every = {"gpu_layers": ALL_LAYERS}
    considered.append(search.candidate("all-gpu", "every layer on the GPU(s)", every))
    if considered[0].fits:
        return _pick(considered)

    moe_layers = [i for i in range(arch.n_layer) if arch.is_moe_layer(i)]
    from_end = caps.n_cpu_moe_from_end
    if moe_layers:
        # upstream counts blocks by index, ik_llama.cpp the last MoE layers; ik shares N out
        # across several GPUs in a way orch does not model, so it is not offered there
        top = len(moe_layers) if from_end else moe_layers[-1] + 1
        k = None
        if caps.n_cpu_moe_multi_gpu or len(gpus) == 1:
            k = smallest(1, top, lambda n: search.gpus_fit({**every, "n_cpu_moe": n}))
        if k is not None and k < top:
            which = f"the last {k} MoE layers" if from_end else f"blocks 0-{k - 1}"
            considered.append(
                search.candidate(
                    "n-cpu-moe",
                    f"experts of {which} in host RAM, the rest on the GPU(s)",
                    {**every, "n_cpu_moe": k},
                )
            )
        if len(gpus) > 1:
            considered.append(_gpu_experts(search, gpus))
        cpu_moe = {**every, "cpu_moe": True}
        considered.append(
            search.candidate("cpu-moe", "every expert in host RAM, the rest on the GPU(s)", cpu_moe)
        )
        if not search.gpus_fit(cpu_moe):
            layers = largest(
                1, arch.n_layer, lambda n: search.gpus_fit({"gpu_layers": n, "cpu_moe": True})
            )
            if layers:
                considered.append(
                    search.candidate(
                        "cpu-moe-ngl",
                        f"every expert in host RAM, {layers} layers on the GPU(s)",
                        {"gpu_layers": layers, "cpu_moe": True},
                    )
                )
    layers = largest(1, arch.n_layer, lambda n: search.gpus_fit({"gpu_layers": n}))
    if layers:
        considered.append(
            search.candidate(
                "ngl",
                f"{layers} of {arch.n_layer + 1} layers on the GPU(s) (plain -ngl), "
                "the rest on the CPU",
                {"gpu_layers": layers},
            )
        )
    considered.append(search.candidate("cpu", "CPU only (-ngl 0)", {"gpu_layers": 0}))
    return _pick(considered)


def _pick(considered: list[Candidate]) -> AutoPlacement:
    fitting = [c for c in considered if c.fits]
    chosen = max(fitting, key=lambda c: c.tokens_per_s) if fitting else None
    return AutoPlacement(chosen, tuple(considered))
