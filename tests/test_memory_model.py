"""The memory model against real measurements (H100 table) and the seeds' own figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.memory.calibration import Comparison, compare_h100
from orchestrator.memory.llama import LlamaConfig, place
from orchestrator.memory.tensors import tensors_from_architecture
from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from tests.conftest import PROFILES, REPO, TEMPLATES

TABLE = REPO / "benchmarks" / "data" / "h100-llama-server.csv"


@pytest.mark.parametrize("comparison", compare_h100(TABLE), ids=lambda c: f"{c.run}-{c.quantity}")
def test_h100_runs_within_target(comparison: Comparison) -> None:
    assert comparison.within_target, comparison


def plan(name: str):  # type: ignore[no-untyped-def]
    return build_plan(Catalog(PROFILES).load(name), make_environment(TEMPLATES))


def test_seed_002_expert_offload_split() -> None:
    hybrid = plan("qwen3-coder-next-iq4nl-hybrid").memory.devices
    embd = 151936 * 2048 * 18 // 32  # token_embd stays on the host
    assert hybrid["CPU"].weights - embd == 41472 * MIB
    assert abs(hybrid["CUDA0"].weights / MIB - 1403) <= 128


def test_seed_002_all_on_gpu() -> None:
    gpu = plan("qwen3-coder-next-iq4nl-gpu").memory.devices["CUDA0"]
    assert abs(gpu.weights / MIB - 42875) <= max(0.02 * 42875, 128)


def test_seed_004_vllm_scout() -> None:
    p = plan("llama4-scout-nvfp4")
    dev = p.memory.devices["CUDA0"]
    assert abs(dev.weights / GIB - 63.5) <= 0.02 * 63.5
    assert abs(dev.kv / GIB - 20.2) <= 0.02 * 20.2
    assert abs(int(p.memory.facts["kv_pool_tokens"]) - 110256) <= 0.02 * 110256
    assert p.fits


def test_vllm_256k_needs_fp8_or_tp2(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "p"
    shutil.copytree(PROFILES, root)
    text = (root / "models" / "llama4-scout-nvfp4.toml").read_text()
    (root / "models" / "long.toml").write_text(text.replace("110000", "262144"))
    p = build_plan(Catalog(root).load("long"), make_environment(TEMPLATES))
    assert not p.fits
    assert any('kv_cache_dtype = "fp8"' in s for s in p.suggestions)


def test_ngl_counts_output_layer_upstream() -> None:
    arch = Catalog(PROFILES).architecture("iquest-coder-v1-40b", "t")
    tensors = tensors_from_architecture(arch, "Q5_K_M")
    cfg = LlamaConfig(ctx=4096, gpu_layers=10, gpus=("CUDA0",), gpu_vram_mib=(97887,))
    placed = place(tensors, arch.n_layer, cfg)
    on_gpu = sorted(layer for layer, d in placed.layer_device.items() if d == "CUDA0")
    assert on_gpu == list(range(71, 80))  # output + the last 9 blocks
    assert placed.output_device == "CUDA0"
    assert placed.tensor_device["token_embd.weight"] == "CPU"


def test_ik_ngl_keeps_output_on_host() -> None:
    arch = Catalog(PROFILES).architecture("iquest-coder-v1-40b", "t")
    tensors = tensors_from_architecture(arch, "Q5_K_M")
    cfg = LlamaConfig(
        ctx=4096, gpu_layers=10, gpus=("CUDA0",), gpu_vram_mib=(97887,), ngl_counts_output=False
    )
    placed = place(tensors, arch.n_layer, cfg)
    assert sorted(layer for layer, d in placed.layer_device.items() if d == "CUDA0") == list(
        range(70, 80)
    )
    assert placed.output_device == "CPU"


def test_first_matching_override_wins() -> None:
    p = plan("qwen35-397b-iq4-2gpu")
    assert p.memory.devices["CUDA0"].weights > 40 * GIB  # layers 0-12 experts
    assert p.memory.devices["CUDA1"].weights > 40 * GIB  # layers 47-59 experts
    assert p.memory.devices["CPU"].weights > 90 * GIB  # the middle, by --cpu-moe


def test_hybrid_kv_only_on_attention_layers() -> None:
    est = plan("qwen35-397b-iq4").memory
    # 15 of 60 layers keep KV: 262144 cells x 2 heads x 256 x (K+V) x f16
    attention_kv = 15 * 262144 * 2 * 256 * 2 * 2
    assert est.devices["CUDA0"].kv >= attention_kv
    assert est.devices["CUDA0"].kv - attention_kv < 256 * MIB  # + the recurrent state


def test_estimate_cli_on_a_real_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from orchestrator.cli import main
    from orchestrator.synthetic import TINY_MOE, write_gguf

    path = write_gguf(TINY_MOE, tmp_path / "m.gguf")
    code = main(
        [
            "estimate",
            str(path),
            "--hardware",
            "epyc9175f-rtxpro6000",
            "--json",
            "--",
            "-c",
            "4096",
            "-ngl",
            "99",
            "--cpu-moe",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    devices = data["devices"]
    assert set(devices) == {"CUDA0", "CPU"}
    for dev in devices.values():
        assert dev["total"] == dev["weights"] + dev["kv"] + dev["compute"] + dev["overhead"]
    assert devices["CUDA0"]["overhead"] == 590 * MIB


def test_corrupt_gguf_in_live_plan_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from orchestrator.cli import main

    root = tmp_path / "p"
    shutil.copytree(PROFILES, root)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    text = (root / "models" / "demo.toml").read_text()
    (root / "models" / "demo.toml").write_text(
        text.replace("~/.cache/orch/models/tiny-dense.gguf", str(bad))
    )
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(root))
    assert main(["plan", "demo"]) == 4
    err = capsys.readouterr().err
    assert "not a readable GGUF file" in err and "Traceback" not in err
