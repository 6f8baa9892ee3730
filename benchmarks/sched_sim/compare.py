"""The memory model's compute buffers against llama.cpp's own planning (``sim``, see sim.cpp).

``python -m benchmarks.sched_sim.compare`` prints one line per configuration of the grid
``tests/test_memory_sched.py`` checks, and the worst errors. ``--sweep`` runs the wider,
random sweep the README quotes: 2,500 configurations over six model shapes, of which llama.cpp
refuses those with a quantized V and flash attention off.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from orchestrator.engines import LlamaCppAdapter
from orchestrator.memory.breakdown import MIB, MemoryEstimate
from orchestrator.memory.calibration import (
    TOLERANCE_FRACTION,
    TOLERANCE_MIB,
    synthetic_architecture,
    synthetic_tensors,
)
from orchestrator.memory.llama import estimate_llama
from orchestrator.synthetic import CALIBRATION_DENSE, CALIBRATION_MOE, SyntheticSpec, write_gguf

HERE = Path(__file__).resolve().parent
SPECS = {
    "moe": CALIBRATION_MOE,
    "dense": CALIBRATION_DENSE,
    # shapes for the sweep: heads wider than the embedding, few KV heads, many small experts
    "d2": SyntheticSpec("d2", "llama", 2048, 4, 32, 8, 128, 6144, ctx_train=131072),
    "d3": SyntheticSpec("d3", "llama", 4096, 4, 32, 4, 128, 11008, ctx_train=131072),
    "m2": SyntheticSpec("m2", "qwen3moe", 1024, 4, 16, 2, 128, 2816, 64, 8, 512, ctx_train=131072),
    "d4": SyntheticSpec("d4", "llama", 3072, 4, 24, 8, 128, 8192, ctx_train=131072, n_vocab=12000),
}
GRID_MODELS = ("dense", "moe")


def build() -> subprocess.CompletedProcess[str]:
    """Run build.sh; its last stdout line is the simulator's path."""
    return subprocess.run([str(HERE / "build.sh")], capture_output=True, text=True, timeout=600)


def write_models(folder: Path, names: tuple[str, ...] = GRID_MODELS) -> dict[str, Path]:
    """The models' headers, their tensor data a hole (no_alloc reads none)."""
    return {n: write_gguf(SPECS[n], folder / f"{n}.gguf", sparse=True) for n in names}


def planned(sim: Path, model: Path, args: str) -> dict[str, dict[str, int]]:
    """llama.cpp's buffers per buffer type: model, context (KV) and compute bytes."""
    done = subprocess.run(
        [str(sim), "-m", str(model), "--fit", "off", *shlex.split(args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sim {args}: {done.stderr[-2000:]}")
    result: dict[str, dict[str, int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def predicted(model: str, args: str) -> MemoryEstimate:
    """The memory model's estimate for one H100 (as ``orch estimate --hardware h100-sxm-80gb``)."""
    spec = SPECS[model]
    arch = synthetic_architecture(spec)
    cfg = LlamaCppAdapter().parse_args(
        shlex.split(args),
        gpus=("CUDA0",),
        gpu_vram_mib=(81079,),
        cuda_context_mib=590,
        moe_layers=list(range(arch.n_layer)) if arch.moe else [],
    )
    return estimate_llama(arch, synthetic_tensors(spec), cfg)


def compute_mib(got: dict[str, dict[str, int]]) -> tuple[float, float]:
    """(GPU, host) compute buffers of a simulated run, MiB."""
    host = got.get("CUDA_Host", {}).get("compute", 0) + got.get("CPU", {}).get("compute", 0)
    return got.get("CUDA0", {}).get("compute", 0) / MIB, host / MIB


def within(predicted_mib: float, measured_mib: float) -> bool:
    """The project's target: 2 % or 128 MiB."""
    limit = max(TOLERANCE_FRACTION * measured_mib, TOLERANCE_MIB)
    return abs(predicted_mib - measured_mib) <= limit


def grid() -> list[tuple[str, str]]:
    """Offload, cache type, flash attention, ubatch and --cpu-moe on both calibration models."""
    cases: list[tuple[str, str]] = []
    for model, ngl, ctx, kv, ub in itertools.product(
        ("dense", "moe"),
        ("0", "part", "99"),
        (4096, 32768, 65536),
        ("f16", "q8_0", "q4_0"),
        (512, 2048),
    ):
        layers = {"dense": "10", "moe": "12"}[model] if ngl == "part" else ngl
        args = f"-ngl {layers} -c {ctx} -np 1 -ub {ub} -b 2048 -ctk {kv} -ctv {kv}"
        cases.append((model, args))
        if kv == "f16":
            cases.append((model, args + " -fa off"))
        if model == "moe" and ngl == "99":
            cases.append((model, args + " --cpu-moe"))
    cases += [
        ("dense", "-ngl 0 -c 131072 -np 1 -ctk q8_0 -ctv q8_0"),
        ("dense", "-ngl 99 -c 131072 -np 1 -ctk q4_0 -ctv q4_0"),
        ("dense", "-ngl 99 -c 32768 -np 1 -ctk q8_0"),
        ("dense", "-ngl 0 -c 32768"),
        ("moe", "-ngl 0 -c 32768 -np 4"),
        ("dense", "-ngl 0 -c 32768 -np 1 -ub 31 -b 31"),
    ]
    return cases


def sweep_cases() -> list[tuple[str, str]]:
    """2,500 configurations drawn (seed 1) from every shape, offload, cache, ubatch and -np."""
    drawn: list[tuple[str, int, int, str, str, int, str, bool]] = []
    for model in ("dense", "moe", "d2", "d3", "m2", "d4"):
        ngls = {"dense": [0, 5, 10, 20, 99], "moe": [0, 6, 12, 24, 99]}.get(model, [0, 2, 99])
        for ngl, ctx, kv, fa, ub, np_ in itertools.product(
            ngls,
            [4096, 16384, 32768, 65536, 131072],
            ["f16", "q8_0", "q4_0", "q8_0/f16"],
            ["auto", "off"],
            [512, 2048],
            ["1", "4", "auto"],
        ):
            drawn.append((model, ngl, ctx, kv, fa, ub, np_, False))
        if model in ("moe", "m2"):
            for ngl, ctx, kv, fa, ub in itertools.product(
                [99, 12], [4096, 32768, 65536], ["f16", "q8_0"], ["auto", "off"], [512, 2048]
            ):
                drawn.append((model, ngl, ctx, kv, fa, ub, "1", True))
    random.Random(1).shuffle(drawn)
    cases = []
    for model, ngl, ctx, kv, fa, ub, np_, cpu_moe in drawn[:2500]:
        k, _, v = kv.partition("/")
        args = f"-ngl {ngl} -c {ctx} -ub {ub} -b {max(ub, 2048)} -ctk {k} -ctv {v or k}"
        args += f" -fa {'on' if fa == 'auto' else 'off'}"
        args += "" if np_ == "auto" else f" -np {np_}"
        args += " --cpu-moe" if cpu_moe else ""
        cases.append((model, args))
    return cases


def sweep(sim: Path) -> int:
    """Run the sweep; print the error range per kind of configuration and every miss."""
    errors: dict[str, list[float]] = collections.defaultdict(list)
    misses: list[str] = []
    refused = 0
    with tempfile.TemporaryDirectory() as tmp:
        models = write_models(Path(tmp), tuple(SPECS))
        for model, args in sweep_cases():
            try:
                gpu_sim, host_sim = compute_mib(planned(sim, models[model], args))
            except RuntimeError:
                refused += 1  # a quantized V cache without flash attention
                continue
            est = predicted(model, args)
            gpu, host = est.devices["CUDA0"].compute / MIB, est.devices["CPU"].compute / MIB
            ngl = int(args.split()[1])
            kind = "-ngl 0" if ngl == 0 else "all layers" if ngl >= 99 else "some layers"
            errors[kind].append(gpu - gpu_sim)
            if not (within(gpu, gpu_sim) and within(host, host_sim)):
                misses.append(f"{model} {args}: GPU {gpu_sim:.1f} predicted {gpu:.1f}")
    checked = sum(len(e) for e in errors.values())
    for kind, errs in sorted(errors.items()):
        print(
            f"{kind:12} {len(errs):5} configurations, GPU error {min(errs):+.1f}..{max(errs):+.1f} MiB"
        )
    print("\n".join(misses))
    print(
        f"{checked - len(misses)}/{checked} within 2 % or 128 MiB ({refused} refused by llama.cpp)"
    )
    return 1 if misses else 0


def main() -> int:
    """Print predicted against llama.cpp's planning for the grid; exit 1 on a miss."""
    done = build()
    if done.returncode != 0:
        print(f"cannot build the simulator:\n{done.stderr[-2000:]}")
        return 1
    sim = Path(done.stdout.strip().splitlines()[-1])
    if "--sweep" in sys.argv[1:]:
        return sweep(sim)
    misses = 0
    worst = (0.0, "")
    with tempfile.TemporaryDirectory() as tmp:
        models = write_models(Path(tmp))
        print(f"{'model':5} {'args':58} {'GPU sim':>8} {'pred':>8}   {'host sim':>8} {'pred':>8}")
        for model, args in grid():
            gpu_sim, host_sim = compute_mib(planned(sim, models[model], args))
            est = predicted(model, args)
            gpu, host = est.devices["CUDA0"].compute / MIB, est.devices["CPU"].compute / MIB
            ok = within(gpu, gpu_sim) and within(host, host_sim)
            misses += not ok
            worst = max(worst, (abs(gpu - gpu_sim), f"{model} {args}"))
            print(
                f"{model:5} {args:58} {gpu_sim:8.1f} {gpu:8.1f}   {host_sim:8.1f} {host:8.1f}"
                + ("" if ok else "  MISS")
            )
    count = len(grid())
    print(
        f"{count - misses}/{count} within 2 % or 128 MiB; largest GPU error {worst[0]:.1f} MiB ({worst[1]})"
    )
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
