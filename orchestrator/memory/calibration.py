"""Check the llama.cpp memory model against measured runs (the committed H100 table)."""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass
from pathlib import Path

from orchestrator.memory.breakdown import MIB
from orchestrator.memory.gguf_arch import parse_llama_args
from orchestrator.memory.llama import estimate_llama
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.schema import Architecture, Moe
from orchestrator.synthetic import CALIBRATION_DENSE, CALIBRATION_MOE, SyntheticSpec, tensor_specs

H100_VRAM_MIB = 81079
TOLERANCE_FRACTION = 0.02
TOLERANCE_MIB = 128


@dataclass(frozen=True)
class Comparison:
    """Predicted against measured for one quantity of one run, in MiB."""

    run: str
    quantity: str
    predicted: float
    measured: float

    @property
    def error(self) -> float:
        """Predicted minus measured."""
        return self.predicted - self.measured

    @property
    def within_target(self) -> bool:
        """Within 2 % or 128 MiB of measured, whichever is larger."""
        return abs(self.error) <= max(TOLERANCE_FRACTION * self.measured, TOLERANCE_MIB)


def synthetic_architecture(spec: SyntheticSpec) -> Architecture:
    """Architecture facts of a synthetic spec."""
    moe = None
    if spec.n_expert:
        moe = Moe(n_expert=spec.n_expert, n_expert_used=spec.n_expert_used, n_ff_exp=spec.n_ff_exp)
    return Architecture(
        gguf_arch="qwen3moe" if spec.n_expert else "llama",
        params_b=0.001,
        n_layer=spec.n_layer,
        n_embd=spec.n_embd,
        n_head=spec.n_head,
        n_head_kv=spec.n_head_kv,
        head_dim=spec.head_dim,
        n_ff=0 if spec.n_expert else spec.n_ff,
        vocab=spec.n_vocab,
        ctx_train=spec.ctx_train,
        moe=moe,
    )


def synthetic_tensors(spec: SyntheticSpec) -> list[Tensor]:
    """The tensor table the synthetic generator writes, without writing it."""
    return [
        Tensor(t.name, tuple(t.shape), t.ggml_type.lower(), t.nbytes) for t in tensor_specs(spec)
    ]


def compare_h100(table: Path) -> list[Comparison]:
    """Predict each committed H100 run and pair every figure with its measurement."""
    out: list[Comparison] = []
    lines = [ln for ln in table.read_text().splitlines() if ln and not ln.startswith("#")]
    for row in csv.DictReader(lines):
        spec = CALIBRATION_MOE if row["model"] == "moe" else CALIBRATION_DENSE
        arch = synthetic_architecture(spec)
        args = [a for a in shlex.split(row["args"]) if a not in ("--fit", "off")]
        cfg = parse_llama_args(
            args,
            gpus=("CUDA0",),
            gpu_vram_mib=(H100_VRAM_MIB,),
            cuda_context_mib=590,
            moe_layers=list(range(arch.n_layer)) if arch.moe else [],
        )
        est = estimate_llama(arch, synthetic_tensors(spec), cfg)
        gpu, cpu = est.devices["CUDA0"], est.devices["CPU"]
        prompt_cache = int(est.facts["prompt_cache"])
        name = row["name"]
        pairs = [
            ("gpu weights", gpu.weights, row["gpu_weights"]),
            ("gpu kv", gpu.kv, row["gpu_kv"]),
            ("gpu compute", gpu.compute, row["gpu_compute"]),
            ("gpu total (nvidia-smi)", gpu.total, row["vram_mib"]),
            ("host weights", cpu.weights, row["cpu_weights"]),
            ("host kv", cpu.kv, row["cpu_kv"]),
            ("host compute", cpu.compute, row["host_compute"]),
            # RSS after one short request: the prompt cache is still empty.
            ("host total (rss)", cpu.total - prompt_cache, row["rss_mib"]),
        ]
        for quantity, predicted, measured in pairs:
            out.append(Comparison(name, quantity, predicted / MIB, float(measured)))
    return out
