"""The speed model against measured figures: the seeds' generation speeds and the H100 runs.

The seeds' figures (``../shared/seeds``) are data here, each with where it comes from and whether
a constant was fitted on it. Only two are: seed 002's all-GPU run (the RTX PRO 6000's
``gpu_node_us``) and seed 003's ``--cpu-moe`` runs (the EPYC's ``thread_scale``), the two the
earlier model was fitted on too. Every other figure is a prediction.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.memory.calibration import h100_run, read_table
from orchestrator.memory.llama import place
from orchestrator.plan import model_tensors
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import Decode, HardwareProfile
from orchestrator.speed import (
    EngineRun,
    llama_workload,
    profile_workload,
    run_for,
    threads_from_args,
)
from orchestrator.speedfit import (
    CPU_NODE,
    GPU_EFFICIENCY,
    GPU_NODE,
    SPLIT,
    THREAD_SCALE,
    Observation,
    fit,
    leave_one_out,
    thread_key,
)

TOLERANCE = 0.15
"""A prediction passes within 15 % of the measured figure, or of its range."""
H100_THREADS = 16
"""Every H100 run used ``-t 16`` (``../shared/calibration/h100-llama-server/README.md``)."""


@dataclass(frozen=True)
class SeedFigure:
    """A generation speed the user's notes measured, for one shipped profile."""

    profile: str
    low: float
    high: float
    mean: float
    source: str
    fitted: bool = False
    """Whether a constant of the hardware profile was fitted on this figure."""


SEED_FIGURES: tuple[SeedFigure, ...] = (
    SeedFigure(
        "qwen3-coder-next-bf16-cpu",
        7.59,
        7.59,
        7.59,
        "seed 002, config A (BF16 on the CPU, 13 threads): TG (sustained) 7.59 tok/s",
    ),
    SeedFigure(
        "qwen3-coder-next-iq4nl-hybrid",
        58.94,
        58.94,
        58.94,
        "seed 002, config B run A (IQ4_NL, -ot exps=CPU): TG (weighted avg) 58.94 tok/s",
    ),
    SeedFigure(
        "qwen3-coder-next-iq4nl-gpu",
        85.36,
        85.36,
        85.36,
        "seed 002, config B run B (IQ4_NL, all on the GPU): TG (weighted avg) 85.36 tok/s",
        fitted=True,
    ),
    SeedFigure(
        "qwen35-397b-iq4",
        19.13,
        24.04,
        22.5,
        "seed 003 (IQ4_KSS, --cpu-moe): 28 runs, TG min 19.13, max 24.04, mean ~22.5 tok/s",
        fitted=True,
    ),
    SeedFigure(
        "llama4-scout-q6k-cpu",
        16.3,
        17.5,
        16.9,
        "seed 004, config A (Q6_K on the CPU, 16 threads): TG (decode) 16.3-17.5 tok/s",
    ),
)
"""Every llama.cpp-family seed profile with a measured generation speed."""

VLLM_SEED_FIGURES: tuple[SeedFigure, ...] = (
    SeedFigure(
        "iquest-coder-40b-nvfp4",
        25.0,
        28.0,
        26.5,
        "seed 000, config B (nvfp4, vLLM): TG 25-28 tok/s (stable)",
    ),
    SeedFigure(
        "qwen3-coder-next-nvfp4",
        58.0,
        100.0,
        79.0,
        "seed 002, config C (nvfp4, vLLM): stable generation 58-100 tok/s",
    ),
    SeedFigure(
        "llama4-scout-nvfp4",
        30.0,
        60.0,
        45.0,
        "seed 004, config B (nvfp4, vLLM): TG 30-60 tok/s (peak 112)",
    ),
)
"""vLLM figures: printed beside the prediction, no target (their ranges are wide)."""


def within(predicted: float, figure: SeedFigure, tolerance: float = TOLERANCE) -> bool:
    """Whether a prediction is within ``tolerance`` of the figure or of its range."""
    return figure.low * (1 - tolerance) <= predicted <= figure.high * (1 + tolerance)


def off_by(predicted: float, figure: SeedFigure) -> float:
    """Relative distance from the figure's range (0 inside it)."""
    if predicted < figure.low:
        return predicted / figure.low - 1
    if predicted > figure.high:
        return predicted / figure.high - 1
    return 0.0


def seed_observation(resolved: ResolvedProfile, figure: SeedFigure) -> Observation:
    """A seed's figure (its mean) as a run to fit constants on."""
    work = profile_workload(resolved, model_tensors(resolved, None)[0])
    return Observation(figure.profile, work, run_for(resolved), figure.mean)


def h100_observations(table: Path, names: Sequence[str] = ()) -> list[Observation]:
    """The committed H100 runs (``benchmarks/data/h100-llama-server.csv``) as fit input."""
    out = []
    for row in read_table(table):
        if names and row["name"] not in names:
            continue
        arch, tensors, cfg = h100_run(row)
        placed = place(tensors, arch.n_layer, cfg)
        work = llama_workload(arch, tensors, placed, cfg, "llama.cpp", None)
        threads, threads_batch = threads_from_args(shlex.split(row["args"]))
        run = EngineRun(
            "llama.cpp",
            None,
            threads or H100_THREADS,
            threads_batch or threads or H100_THREADS,
            batch=cfg.batch,
            ubatch=cfg.ubatch,
        )
        out.append(Observation(row["name"], work, run, float(row["tg_tps"])))
    return out


# ---------------------------------------------------------------- fits of the shipped profiles

H100_FREE = (GPU_EFFICIENCY, GPU_NODE, SPLIT, CPU_NODE, thread_key("llama.cpp", "f16"))
"""What the five H100 runs determine: the GPU's read efficiency and per-node cost, the split
cost, and the host's per-node cost and per-thread F16 rate."""
SEED_FREE = (GPU_NODE, THREAD_SCALE)
"""What the two allowed seed figures determine for the EPYC + RTX PRO 6000 machine."""


def unfitted(hardware: HardwareProfile) -> HardwareProfile:
    """``hardware`` with the schema's default ``[decode]``, the priors of a fit.

    So regenerating a profile does not depend on the values it already holds.
    """
    return hardware.model_copy(update={"decode": Decode()})


@dataclass(frozen=True)
class MachineFit:
    """Constants fitted for one hardware profile, and their held-out errors."""

    constants: dict[str, float]
    errors: dict[str, float]
    """Per run: predicted / measured - 1, each predicted by a fit without that run."""


def fit_h100(table: Path, hardware: HardwareProfile) -> MachineFit:
    """Fit the H100 machine's constants on its five runs; leave-one-out errors."""
    observations = h100_observations(table)
    prior = unfitted(hardware)
    constants = dict(fit(observations, prior, H100_FREE).constants)
    held = leave_one_out(observations, prior, H100_FREE)
    errors = {o.name: held[o.name] / o.tokens_per_s - 1 for o in observations}
    return MachineFit(constants, errors)


def fit_seed_machine(
    resolve: Callable[[str], ResolvedProfile], hardware: HardwareProfile
) -> MachineFit:
    """Fit ``gpu_node_us`` on seed 002 all-GPU and ``thread_scale`` on seed 003.

    ``hardware`` holds every other constant, from its sources. No other seed figure is used.
    """
    figures = [f for f in SEED_FIGURES if f.fitted]
    observations = []
    for figure in figures:
        resolved = dataclasses.replace(resolve(figure.profile), hardware=hardware)
        observations.append(seed_observation(resolved, figure))
    result = fit(observations, hardware, SEED_FREE, ridge=1e-9)
    return MachineFit(dict(result.constants), {n: result.error(n) for n in result.measured})
