"""The memory model against real CPU-only llama-server runs (benchmarks/data/cpu-llama-server.csv).

The table was measured by ``benchmarks/measure_cpu.py``; these tests need neither llama-server
nor the GGUF files: the models' tensor tables come from their synthetic specs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.memory.breakdown import MIB
from orchestrator.memory.calibration import (
    CPU_MODELS,
    Comparison,
    compare_cpu,
    read_table,
    synthetic_tensors,
)
from orchestrator.memory.llama import REPACK_AVX2, LlamaConfig, estimate_llama, repacks
from orchestrator.memory.tensors import read_gguf
from orchestrator.synthetic import SyntheticSpec, tensor_specs, write_gguf
from tests.conftest import REPO

TABLE = REPO / "benchmarks" / "data" / "cpu-llama-server.csv"
COMPARISONS = compare_cpu(TABLE)


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: f"{c.run}-{c.quantity}")
def test_cpu_runs_within_target(comparison: Comparison) -> None:
    assert comparison.within_target, comparison


def test_matrix_covers_the_issue() -> None:
    rows = read_table(TABLE)
    args = [r["args"] for r in rows]
    assert len(rows) >= 20
    assert {r["model"] for r in rows} >= {"dense", "moe"}
    assert any("-c 4096 " in a for a in args) and any("-c 131072 " in a for a in args)
    for kv_type in ("q8_0", "q4_0"):
        assert any(f"-ctk {kv_type} -ctv {kv_type}" in a for a in args)
    assert any("-fa on" in a for a in args) and any("-fa off" in a for a in args)
    assert any("-np 1" in a for a in args) and any("-np 4" in a for a in args)
    assert any("-ub 2048" in a for a in args)
    assert any("-lm none" in a for a in args) and any("mlock" in a for a in args)
    assert all(float(r["cpu_weights"]) > 0 and float(r["rss_mib"]) > 0 for r in rows)


def test_every_table_figure_is_checked() -> None:
    per_run: dict[str, int] = {}
    for c in COMPARISONS:
        per_run[c.run] = per_run.get(c.run, 0) + 1
    assert set(per_run) == {r["name"] for r in read_table(TABLE)}
    assert min(per_run.values()) >= 5


@pytest.mark.parametrize("model", sorted(CPU_MODELS))
def test_specs_match_the_tables_models(model: str) -> None:
    # The committed table measured GGUFs of these specs: the weights llama.cpp reported without
    # mmap span or repacking (-lm none -nr, or a model whose matrices are not repacked).
    spec = CPU_MODELS[model]
    total = sum(t.nbytes for t in synthetic_tensors(spec)) / MIB
    rows = [r for r in read_table(TABLE) if r["model"] == model and float(r["cpu_extra"]) == 0]
    assert rows
    for row in rows:
        assert abs(float(row["cpu_weights"]) - total) < 0.01


def _tiny(spec: SyntheticSpec) -> SyntheticSpec:
    from dataclasses import replace

    return replace(spec, n_layer=2, n_embd=128, n_head=4, n_head_kv=2, head_dim=32, n_ff=256)


@pytest.mark.parametrize("model", sorted(CPU_MODELS))
def test_synthetic_tensors_match_the_written_file(model: str, tmp_path: Path) -> None:
    # The comparison recreates the tensor table from the spec: it must be what write_gguf writes.
    spec = _tiny(CPU_MODELS[model])
    header = read_gguf(write_gguf(spec, tmp_path / "m.gguf"))
    written = [(t.name, t.shape, t.type_name, t.nbytes) for t in header.tensors]
    table = [(t.name, t.shape, t.type_name, t.nbytes) for t in synthetic_tensors(spec)]
    assert written == table
    assert len(table) == len(tensor_specs(spec))


def test_repack_only_cpu_matrices_of_repackable_types() -> None:
    spec = CPU_MODELS["dense-q4_0"]
    tensors = {t.name: t for t in synthetic_tensors(spec)}
    cpu = LlamaConfig(ctx=4096, repack_types=REPACK_AVX2)
    assert repacks(tensors["blk.0.ffn_up.weight"], cpu)
    assert repacks(tensors["output.weight"], cpu)
    assert not repacks(tensors["token_embd.weight"], cpu)  # read by get_rows
    assert not repacks(tensors["blk.0.attn_norm.weight"], cpu)  # f32 vector
    gpu = LlamaConfig(ctx=4096, repack_types=REPACK_AVX2, gpus=("CUDA0",), gpu_vram_mib=(80000,))
    assert not repacks(tensors["blk.0.ffn_up.weight"], gpu)  # the pinned host buffer wins


def test_non_unified_kv_pads_each_stream() -> None:
    spec = CPU_MODELS["dense"]
    from orchestrator.memory.calibration import synthetic_architecture

    arch = synthetic_architecture(spec)
    tensors = synthetic_tensors(spec)
    split = estimate_llama(arch, tensors, LlamaConfig(ctx=12000, parallel=4, kv_unified=False))
    shared = estimate_llama(arch, tensors, LlamaConfig(ctx=12000, parallel=4))
    assert split.facts["kv_cells"] == 4 * 3072  # 12032 / 4 = 3008 -> 3072 per stream
    assert shared.facts["kv_cells"] == 12032
    assert split.devices["CPU"].compute < shared.devices["CPU"].compute


@pytest.mark.parametrize("run", [r["name"] for r in read_table(TABLE)])
def test_weight_and_kv_buffers_are_exact(run: str) -> None:
    # Buffer sizes follow from tensor shapes: the model must get them to the byte, not just
    # within the 128 MiB floor (repacking with mmap doubles the weights; per-stream padding).
    for c in COMPARISONS:
        if c.run == run and c.quantity in ("host weights", "host kv"):
            assert abs(c.error) < 0.1, c
