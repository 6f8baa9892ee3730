"""ik_llama.cpp as a real component: its quantized files, its server, its memory.

Files come from ik's own llama-quantize (tests/conftest.py ``ik_ggufs``), the server is ik's
CPU build (``ik_llama``); a missing build fails these tests with how to get it.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from orchestrator.cli import main
from orchestrator.health import served_names
from orchestrator.memory.breakdown import MIB
from orchestrator.memory.calibration import Comparison, compare_cpu, ik_mix_tensors, read_table
from orchestrator.memory.gguf_file import read_gguf_file
from orchestrator.memory.tensors import read_gguf
from tests.conftest import REPO, OrchEnv, free_port
from tests.test_lifecycle_podman import _containers

IK_TYPES = {"iq4_kss", "iq4_ks", "iq4_k", "iq3_ks"}


@pytest.mark.parametrize("recipe", ["iq4_kss-mix", "iq3_ks"])
def test_ik_types_read_exactly(ik_ggufs: dict[str, Path], recipe: str) -> None:
    """Every tensor's size, from orch's type table, is the span ik's quantizer wrote for it."""
    path = ik_ggufs[recipe]
    with pytest.raises(ValueError, match="is not a valid GGMLQuantizationType"):
        gguf.GGUFReader(str(path))  # what orch used before: upstream's enum only
    header = read_gguf_file(path)
    types = {t.ggml_type.name for t in header.tensors}
    assert types & IK_TYPES, types
    if recipe == "iq4_kss-mix":
        assert {"iq4_kss", "iq4_ks", "iq4_k", "q8_0"} <= types
    alignment = int(header.metadata.get("general.alignment", 32))  # type: ignore[call-overload]
    by_offset = sorted(header.tensors, key=lambda t: t.offset)
    for tensor, following in zip(by_offset, by_offset[1:], strict=False):
        padding = following.offset - tensor.offset - tensor.nbytes
        assert 0 <= padding < alignment, (tensor.name, tensor.ggml_type.name, padding)
    last = by_offset[-1]
    assert header.data_offset + last.offset + last.nbytes == path.stat().st_size


@pytest.mark.parametrize("recipe", ["iq4_kss-mix", "iq3_ks"])
def test_orch_estimate_reports_ik_weights_exactly(
    ik_ggufs: dict[str, Path], recipe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ik_ggufs[recipe]
    exact = sum(t.nbytes for t in read_gguf(path).tensors)
    args = ["-c", "512", "--no-mmap", "-np", "1"]
    assert main(["estimate", str(path), "--engine", "ik_llama.cpp", "--json", "--", *args]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    assert devices["CPU"]["weights"] == exact
    # as a person reads it, with either engine's arguments
    assert main(["estimate", str(path), "--", "-c", "512"]) == 0
    assert f"{exact:,} bytes of weights (" in capsys.readouterr().out


# ---------------------------------------------------------------- memory, predicted against measured

IK_TABLE = REPO / "benchmarks" / "data" / "cpu-ik-llama-server.csv"
IK_COMPARISONS = compare_cpu(IK_TABLE, "ik_llama.cpp")


@pytest.mark.parametrize("comparison", IK_COMPARISONS, ids=lambda c: f"{c.run}-{c.quantity}")
def test_ik_cpu_runs_within_target(comparison: Comparison) -> None:
    assert comparison.within_target, comparison


@pytest.mark.parametrize("quantity", ["host weights", "host kv", "host compute"])
def test_ik_buffers_to_the_logged_precision(quantity: str) -> None:
    # ik logs MiB with two decimals; compute allows the router logits orch leaves out
    limit = {"host weights": 0.01, "host kv": 0.01, "host compute": 0.6}[quantity]
    for c in IK_COMPARISONS:
        if c.quantity == quantity:
            assert abs(c.error) <= limit, c


def test_ik_table_covers_the_headline_twin() -> None:
    rows = {r["name"]: r for r in read_table(IK_TABLE)}
    assert {r["model"] for r in rows.values()} == {"ik-mix", "dense", "moe"}
    twin = rows["k07"]["args"]
    for flag in ("--cpu-moe", "-ot", "-ger", "--no-mmap", "-b 2048", "-ub 2048"):
        assert flag in twin


def test_ik_mix_table_is_what_ik_quantized(ik_ggufs: dict[str, Path]) -> None:
    written = [
        (t.name, t.shape, t.type_name, t.nbytes) for t in read_gguf(ik_ggufs["iq4_kss-mix"]).tensors
    ]
    assert written == [(t.name, t.shape, t.type_name, t.nbytes) for t in ik_mix_tensors()]


# ---------------------------------------------------------------- seed 003's CPU twin, for real

TWIN_ARCHITECTURE = """\
description = "orchestrator.synthetic SPECS['ik-moe']: a small Qwen3 MoE with ik-quantizable rows"
gguf_arch = "qwen3moe"
params_b = 0.03
n_layer = 4
n_embd = 512
n_head = 8
n_head_kv = 2
head_dim = 64
vocab = 1312
ctx_train = 32768

[moe]
n_expert = 16
n_expert_used = 4
n_ff_exp = 256
"""

# profiles/models/qwen35-397b-iq4.toml (seed 003, "Single GPU + cpu-moe") without the GPU, on
# the synthetic model in ik types, with the seed's -ot / -ger from its codegen and 2-GPU runs.
TWIN = """\
description = "seed 003's CPU twin: ik_llama.cpp in podman, --cpu-moe, -ot, -ger, --no-mmap"
architecture = "synthetic-ik-moe"
hardware = "small-cpu"

[model]
path = "{model}"
quant = "IQ4_KSS"

[engine]
kind = "ik_llama.cpp"
ctx = 32768        # the model's trained context (the seed: 262144 for Qwen3.5)
threads = 2        # this machine's cores (the seed: 13 and 24)
threads_batch = 2
jinja = true
batch = 2048
ubatch = 2048
flash_attn = "on"
load_mode = "no-mmap"
cpu_moe = true
grouped_expert_routing = true
override_tensors = [{{ pattern = 'blk\\.0\\.ffn_up_exps', device = "CPU" }}]

[runtime]
kind = "podman"
image = "{image}"
shm_size = "16g"
cap_add = ["SYS_NICE"]

[publish]
port = {port}

[warmup]
requests = 3   # seed 003: "2-3 dummy requests before stable TG"
"""


def test_headline_twin_plan_up_bench_down(
    orch_env: OrchEnv, ik_podman_image: str, ik_ggufs: dict[str, Path]
) -> None:
    model = ik_ggufs["iq4_kss-mix"]
    port = free_port()
    (orch_env.profiles / "architectures" / "synthetic-ik-moe.toml").write_text(TWIN_ARCHITECTURE)
    orch_env.write_profile("twin", TWIN.format(model=model, image=ik_podman_image, port=port))

    # live plan: reads the ik-typed header, sizes it to the byte
    plan_run = orch_env.run("plan", "twin", "--json")
    assert plan_run.returncode == 0, plan_run.stdout + plan_run.stderr
    planned = json.loads(plan_run.stdout)
    assert planned["weights_source"] == "GGUF header (1 file(s))"
    assert planned["model_bytes"] == sum(t.nbytes for t in read_gguf(model).tensors)
    assert planned["live_problems"] == []
    argv = planned["argv"]
    engine_argv = argv[argv.index(ik_podman_image) + 1 :]
    for flag in ("--cpu-moe", "--grouped-expert-routing", "--no-mmap", "--jinja"):
        assert flag in engine_argv
    assert engine_argv[engine_argv.index("--override-tensor") + 1] == r"blk\.0\.ffn_up_exps=CPU"
    assert engine_argv[engine_argv.index("--batch-size") + 1] == "2048"
    assert engine_argv[engine_argv.index("--ubatch-size") + 1] == "2048"

    try:
        up = orch_env.run("up", "twin", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "warm-up 3: TTFT" in up.stdout and "[timings]" in up.stdout
        assert _containers("twin") == ["orch-twin"]
        print(f"\n[measured] ik twin up:\n{up.stdout}")

        health = orch_env.run("status", "twin", "--json")
        assert health.returncode == 0, health.stderr
        (status,) = json.loads(health.stdout)
        assert status["state"] == "running" and status["health"] == 200
        # ik takes --alias (its CPU --help does not list it): clients see the profile name
        assert served_names(status["endpoint"]) == ["twin"]

        bench = orch_env.run(
            "bench", "twin", "--runs", "2", "--prompt-tokens", "256", "--max-tokens", "16", "--json"
        )
        assert bench.returncode == 0, bench.stdout + bench.stderr
        report = json.loads(bench.stdout)
        runs = report["runs"]
        assert len(runs) == 2 and all(r["source"] == "timings" for r in runs)
        assert all(r["prompt_tokens"] > 128 for r in runs)  # 256 asked, counted by the engine
        assert report["engine"] == "ik_llama.cpp" and report["summary"]["tg_tps"]["min"] > 0
        print(f"[measured] ik twin bench: {runs}")

        # host memory predicted against measured after the warm-up (short prompts): the rule of
        # the CPU tables, every buffer but compute and work, and an empty prompt cache
        cpu = planned["memory"]["devices"]["CPU"]
        facts = planned["memory"]["facts"]
        resident = (
            cpu["weights"]
            + cpu["kv"]
            + cpu["overhead"]
            - facts["prompt_cache"]
            - facts.get("cpu_work_buffer", 0)
        )
        rss = status["rss_bytes"]
        error = resident - rss
        print(
            f"[measured] ik twin host memory after warm-up: predicted {resident / MIB:.1f} MiB "
            f"resident (weights {cpu['weights'] / MIB:.2f}, KV {cpu['kv'] / MIB:.2f}, plan total "
            f"{cpu['total'] / MIB:.1f} with compute and the prompt cache limit), RSS "
            f"{rss / MIB:.1f} MiB, error {error / MIB:+.1f} MiB"
        )
        assert abs(error) <= max(0.02 * rss, 128 * MIB)
    finally:
        down = orch_env.run("down", "twin", "--grace", "10")
    assert down.returncode == 0, down.stdout + down.stderr
    assert _containers("twin") == []
    assert orch_env.record("twin") is None
