"""Check the llama.cpp memory model against measured runs (the committed H100 and CPU tables).

``compare_h100`` pairs every figure of ``benchmarks/data/h100-llama-server.csv`` with its
prediction, ``compare_cpu`` every figure of ``benchmarks/data/cpu-llama-server.csv`` (written by
``benchmarks/measure_cpu.py``). Both recreate the measured models' tensor tables from their
synthetic specs, so neither needs the GGUF files nor llama-server.

Host RSS after a request (the rule ``compare_cpu`` checks): every host weight buffer (mmapped
pages too: the warmup runs every expert and a CPU completion reads every matrix), the whole KV
cache (``llama_kv_cache`` clears its buffer at start), the process base and the output buffer.
The compute buffer and the CPU work buffer are reserved for the worst-case ubatch but resident
only as far as a graph has used them: a short prompt touches a few MiB, so for such a run the
rule leaves them out; a prompt that fills the context touches all of them, and the rule counts
them. Plans always count them. The prompt cache (``--cache-ram``) is empty after one request.
"""

from __future__ import annotations

import csv
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from orchestrator.engines import LLAMA_SERVERS, LlamaCppAdapter
from orchestrator.ggml_types import ggml_type
from orchestrator.memory.breakdown import MIB
from orchestrator.memory.llama import REPACK_AVX2, LlamaConfig, estimate_llama
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.schema import Architecture, Moe
from orchestrator.synthetic import (
    CALIBRATION_DENSE,
    CALIBRATION_MOE,
    CPU_BENCH_DENSE,
    CPU_BENCH_DENSE_Q4,
    CPU_BENCH_MOE,
    SPECS,
    SyntheticSpec,
    tensor_specs,
)

H100_VRAM_MIB = 81079
CPU_MODELS: dict[str, SyntheticSpec] = {
    "dense": CPU_BENCH_DENSE,
    "dense-q4_0": CPU_BENCH_DENSE_Q4,
    "moe": CPU_BENCH_MOE,
}
"""The ``model`` column of the CPU table."""
TOLERANCE_FRACTION = 0.02
TOLERANCE_MIB = 128
KV_FILL_SLACK = 256
"""A prompt within this many tokens of a stream's cells counts as filling the context."""


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


IK_MIX = "ik-mix"
"""The ik table's ik-typed model: SPECS["ik-moe"] through ik's llama-quantize (iq4_kss-mix)."""
IK_MIX_TYPES: tuple[tuple[str, str], ...] = (
    (r"_exps\.weight$", "iq4_kss"),
    (r"\.attn_output\.weight$", "iq4_ks"),
    (r"\.attn_[qkv]\.weight$", "q8_0"),
    (r"^token_embd\.weight$", "iq4_k"),
    (r"^output\.weight$", "q8_0"),
)
"""The types ik's quantizer gives each tensor under the iq4_kss-mix recipe (vectors and the
router stay F32); tests/test_ik_llama.py checks them against a file it really wrote."""


def ik_mix_tensors() -> list[Tensor]:
    """The tensor table of the ik table's ``ik-mix`` model, without quantizing it."""
    out = []
    for t in tensor_specs(SPECS["ik-moe"]):
        type_name = "f32"
        if len(t.shape) > 1 and "ffn_gate_inp" not in t.name:
            type_name = next(ty for pattern, ty in IK_MIX_TYPES if re.search(pattern, t.name))
        out.append(Tensor(t.name, tuple(t.shape), type_name, ggml_type(type_name).nbytes(t.shape)))
    return out


def cpu_model(model: str) -> tuple[Architecture, list[Tensor]]:
    """Architecture and tensor table of a CPU table's ``model`` column."""
    if model == IK_MIX:
        return synthetic_architecture(SPECS["ik-moe"]), ik_mix_tensors()
    spec = CPU_MODELS[model]
    return synthetic_architecture(spec), synthetic_tensors(spec)


def read_table(table: Path) -> list[dict[str, str]]:
    """The rows of a committed table (``#`` lines are its header comment)."""
    lines = [ln for ln in table.read_text().splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(lines))


def h100_run(row: dict[str, str]) -> tuple[Architecture, list[Tensor], LlamaConfig]:
    """The model and the memory model's configuration of one row of an H100 table."""
    spec = CALIBRATION_MOE if row["model"] == "moe" else CALIBRATION_DENSE
    arch = synthetic_architecture(spec)
    cfg = LlamaCppAdapter().parse_args(
        shlex.split(row["args"]),  # --fit off is a flag like any other
        gpus=("CUDA0",),
        gpu_vram_mib=(H100_VRAM_MIB,),
        cuda_context_mib=590,
        moe_layers=list(range(arch.n_layer)) if arch.moe else [],
    )
    return arch, synthetic_tensors(spec), cfg


def compare_h100(table: Path) -> list[Comparison]:
    """Predict each committed H100 run and pair every figure with its measurement."""
    out: list[Comparison] = []
    for row in read_table(table):
        arch, tensors, cfg = h100_run(row)
        est = estimate_llama(arch, tensors, cfg)
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


def compare_cpu(table: Path, engine: str = "llama.cpp") -> list[Comparison]:
    """Predict each committed CPU-only run and pair every figure with its measurement.

    Figures: host weights (every model buffer, ``CPU_REPACK`` included), KV, compute (the
    buffer llama.cpp logs), RSS after the request (the rule in this module's docstring), the
    RSS beyond the weight and KV buffers (process base, output buffer and, for a prompt that
    fills the context, compute and work buffers), and for ``mlock`` runs the locked bytes.
    ``engine``: whose server the table measured (``benchmarks/data/cpu-ik-llama-server.csv``:
    ``ik_llama.cpp``); its adapter reads the arguments as that server does.
    """
    out: list[Comparison] = []
    adapter = LLAMA_SERVERS[engine]
    for row in read_table(table):
        arch, tensors = cpu_model(row["model"])
        cfg = adapter.parse_args(
            shlex.split(row["args"]),
            gpus=(),
            gpu_vram_mib=(),
            cuda_context_mib=0,
            moe_layers=list(range(arch.n_layer)) if arch.moe else [],
            repack_types=REPACK_AVX2,  # measured on x86-64 with AVX2
        )
        est = estimate_llama(arch, tensors, cfg)
        cpu = est.devices["CPU"]
        resident_overhead = cpu.overhead - int(est.facts["prompt_cache"])
        work = int(est.facts.get("cpu_work_buffer", 0))
        filled = int(row["prompt_tokens"]) + KV_FILL_SLACK >= int(row["n_ctx_seq"])
        if filled:
            resident_overhead += cpu.compute
        else:
            resident_overhead -= work
        m = {k: float(row[k]) for k in ("cpu_weights", "cpu_kv", "cpu_compute", "rss_mib")}
        pairs: list[tuple[str, int, float]] = [
            ("host weights", cpu.weights, m["cpu_weights"]),
            ("host kv", cpu.kv, m["cpu_kv"]),
            ("host compute", cpu.compute, m["cpu_compute"]),
            ("host rss", cpu.weights + cpu.kv + resident_overhead, m["rss_mib"]),
            (
                "host rss - weights - kv",
                resident_overhead,
                m["rss_mib"] - m["cpu_weights"] - m["cpu_kv"],
            ),
        ]
        if "mlock" in row["args"]:
            pairs.append(("host locked", cpu.weights, float(row["locked_mib"])))
        for quantity, predicted, measured in pairs:
            out.append(Comparison(row["name"], quantity, predicted / MIB, measured))
    return out
