"""Predicted against measured decode (and prefill) speed: the seeds and the H100 runs.

    python -m benchmarks.bench_speed     (make bench-speed)

Prints, for every llama.cpp-family seed profile with a measured generation speed, the plan's
``speed.decode_tps`` beside the seed's figure and whether a constant was fitted on it; the vLLM
seeds (no target); the seeds' prompt-processing figures (no target); and the five H100 runs,
fitted on all five and each left out in turn.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from orchestrator.speed import decode_seconds
from orchestrator.speedcheck import (
    SEED_FIGURES,
    TOLERANCE,
    VLLM_SEED_FIGURES,
    SeedFigure,
    fit_h100,
    h100_observations,
    off_by,
    within,
)
from orchestrator.speedfit import apply

ROOT = Path(__file__).resolve().parent.parent
H100_TABLE = ROOT / "benchmarks" / "data" / "h100-llama-server.csv"

SEED_PREFILL: dict[str, tuple[str, str]] = {
    "qwen3-coder-next-bf16-cpu": ("33.37-117.40", "seed 002 A: short prompt / 287 tokens"),
    "qwen3-coder-next-iq4nl-hybrid": ("761-1,120", "seed 002 B run A (representative)"),
    "qwen3-coder-next-iq4nl-gpu": ("880-3,572", "seed 002 B run B (representative)"),
    "qwen35-397b-iq4": ("101-372 (mean ~160)", "seed 003, 28 runs"),
    "llama4-scout-q6k-cpu": ("~40", "seed 004 A, 2.5K-5K token prompts"),
    "iquest-coder-40b-nvfp4": ("1,100-2,300", "seed 000 B"),
    "qwen3-coder-next-nvfp4": ("17-669 (burst)", "seed 002 C"),
    "llama4-scout-nvfp4": ("700-1,200 (peak 1,370)", "seed 004 B"),
}


def _range(figure: SeedFigure) -> str:
    if figure.low == figure.high:
        return f"{figure.low:g}"
    return f"{figure.low:g}-{figure.high:g}"


def main() -> int:
    catalog = Catalog(ROOT / "profiles")
    env = make_environment(ROOT / "templates")
    misses = 0
    print("Decode (tok/s): `orch plan --dry-run NAME --json` speed.decode_tps against the seeds")
    print(
        f"{'profile':32} {'predicted':>9} {'range':>13} {'measured':>11} {'off':>7}  fitted on it"
    )
    plans = {}
    for figure in (*SEED_FIGURES, *VLLM_SEED_FIGURES):
        plans[figure.profile] = build_plan(catalog.load(figure.profile), env)
    for figure in SEED_FIGURES:
        speed = plans[figure.profile].speed
        assert speed is not None
        ok = within(speed.decode_tps, figure)
        misses += not ok
        low, high = speed.decode_range
        print(
            f"{figure.profile:32} {speed.decode_tps:9.2f} {low:6.1f}-{high:<6.1f} "
            f"{_range(figure):>11} {100 * off_by(speed.decode_tps, figure):+6.1f}%  "
            f"{'yes' if figure.fitted else 'no'}{'' if ok else '  MISS'}"
        )
    print(f"{len(SEED_FIGURES) - misses}/{len(SEED_FIGURES)} within {TOLERANCE:.0%} of the figure")
    print("\nvLLM (no target: bandwidth plus per-layer kernels, nvfp4 weights)")
    for figure in VLLM_SEED_FIGURES:
        speed = plans[figure.profile].speed
        assert speed is not None
        print(f"{figure.profile:32} {speed.decode_tps:9.2f} {'':13} {_range(figure):>11}")

    print("\nPrefill (tok/s, 2048-token prompt; no target)")
    for name, (measured, source) in SEED_PREFILL.items():
        speed = plans[name].speed
        assert speed is not None
        print(f"{name:32} {speed.prefill_tps:9.0f}   measured {measured} ({source})")

    hardware = catalog.hardware("h100-sxm-80gb")
    result = fit_h100(H100_TABLE, hardware)
    fitted = apply(hardware, result.constants)
    print("\nH100 runs (tok/s): the profile's fit on all five, and each run left out of the fit")
    print(f"{'run':5} {'measured':>9} {'fit on 5':>9} {'left out':>9} {'error':>7}")
    for obs in h100_observations(H100_TABLE):
        all5 = 1 / decode_seconds(obs.work, fitted, obs.run, 0)
        held = obs.tokens_per_s * (1 + result.errors[obs.name])
        print(
            f"{obs.name:5} {obs.tokens_per_s:9.1f} {all5:9.1f} {held:9.1f} "
            f"{100 * result.errors[obs.name]:+6.1f}%"
        )
    worst = max(abs(e) for e in result.errors.values())
    print(f"largest leave-one-out error: {100 * worst:.1f} %")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
