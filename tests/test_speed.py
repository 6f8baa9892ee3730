"""The speed model: the seeds' generation speeds, the H100 runs, the physics behind them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.fit_speed import regenerate
from orchestrator.cli import main
from orchestrator.memory.calibration import (
    h100_run,
    read_table,
    synthetic_architecture,
    synthetic_tensors,
)
from orchestrator.memory.llama import CPU, LlamaConfig, place
from orchestrator.memory.tensors import Tensor
from orchestrator.plan import model_tensors
from orchestrator.profiles.loader import Catalog, ResolvedProfile
from orchestrator.speed import (
    EngineRun,
    decode_seconds,
    engine_run,
    llama_workload,
    predict_profile,
    profile_workload,
)
from orchestrator.speedcheck import (
    SEED_FIGURES,
    TOLERANCE,
    VLLM_SEED_FIGURES,
    SeedFigure,
    fit_h100,
    h100_observations,
    within,
)
from orchestrator.synthetic import (
    CALIBRATION_DENSE,
    CALIBRATION_MOE,
    TINY_DENSE,
    TINY_MOE,
    SyntheticSpec,
    write_gguf,
)
from tests.conftest import PROFILES, REPO, free_port

H100_TABLE = REPO / "benchmarks" / "data" / "h100-llama-server.csv"


def resolve(name: str, **engine: object) -> ResolvedProfile:
    resolved = Catalog(PROFILES).load(name)
    if engine:
        profile = resolved.profile.model_copy(
            update={"engine": resolved.profile.engine.model_copy(update=engine)}
        )
        resolved = dataclasses.replace(resolved, profile=profile)
    return resolved


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["plan", "--dry-run", "--json", *args]) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


# ---------------------------------------------------------------- the seeds' figures


@pytest.mark.parametrize("figure", SEED_FIGURES, ids=lambda f: f.profile)
def test_seed_generation_speed(figure: SeedFigure, capsys: pytest.CaptureFixture[str]) -> None:
    """`plan --dry-run NAME --json` predicts each seed's measured generation speed within 15 %."""
    speed = plan_json(capsys, figure.profile)["speed"]
    assert isinstance(speed, dict)
    predicted = speed["decode_tps"]
    assert within(predicted, figure), (
        f"{figure.profile}: predicted {predicted} tok/s, measured {figure.low}-{figure.high} "
        f"({figure.source})"
    )
    low, high = speed["decode_tps_range"]
    assert low < predicted < high


def test_only_the_two_allowed_figures_are_fitted() -> None:
    fitted = {f.profile for f in SEED_FIGURES if f.fitted}
    assert fitted == {"qwen3-coder-next-iq4nl-gpu", "qwen35-397b-iq4"}
    text = (PROFILES / "hardware" / "epyc9175f-rtxpro6000.toml").read_text()
    fitted_lines = [ln for ln in text.splitlines() if "# fitted on" in ln]
    assert [ln.split("=")[0].strip() for ln in fitted_lines] == ["gpu_node_us", "thread_scale"]
    assert "seed 002 all-GPU" in fitted_lines[0] and "seed 003" in fitted_lines[1]


@pytest.mark.parametrize("figure", VLLM_SEED_FIGURES, ids=lambda f: f.profile)
def test_vllm_profiles_get_a_bandwidth_prediction(
    figure: SeedFigure, capsys: pytest.CaptureFixture[str]
) -> None:
    speed = plan_json(capsys, figure.profile)["speed"]
    assert isinstance(speed, dict)
    # no target (the seeds' ranges are wide); it is a bandwidth bound, so of the right order
    assert figure.low / 3 < speed["decode_tps"] < figure.high * 3


def test_shipped_speed_constants_regenerate_unchanged() -> None:
    """`python -m benchmarks.fit_speed` reproduces the committed [decode] / [prefill] tables."""
    for path, text in regenerate(Catalog(PROFILES)).items():
        assert path.read_text() == text, f"{path}: run python -m benchmarks.fit_speed"


# ---------------------------------------------------------------- the H100 runs


def test_h100_leave_one_out() -> None:
    """Fitted on four of the five H100 runs, the model predicts the fifth within 15 %."""
    result = fit_h100(H100_TABLE, Catalog(PROFILES).hardware("h100-sxm-80gb"))
    assert set(result.errors) == {"m01", "m08", "m13", "d01", "d04"}
    for name, error in result.errors.items():
        assert abs(error) <= TOLERANCE, (name, error)


def test_h100_ranking_of_partial_offload() -> None:
    """The order auto placement relies on: -ngl 12 decodes faster than --cpu-moe there."""
    hardware = Catalog(PROFILES).hardware("h100-sxm-80gb")
    by_name = {o.name: o for o in h100_observations(H100_TABLE)}
    m13 = 1 / decode_seconds(by_name["m13"].work, hardware, by_name["m13"].run, 0)
    m08 = 1 / decode_seconds(by_name["m08"].work, hardware, by_name["m08"].run, 0)
    assert m13 > m08


@pytest.fixture(scope="module")
def sparse_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sparse")
    return {
        "moe": write_gguf(CALIBRATION_MOE, folder / "moe.gguf", sparse=True),
        "dense": write_gguf(CALIBRATION_DENSE, folder / "dense.gguf", sparse=True),
    }


def estimate_json(
    capsys: pytest.CaptureFixture[str], model: Path, args: list[str]
) -> dict[str, object]:
    code = main(["estimate", str(model), "--hardware", "h100-sxm-80gb", "--json", "--", *args])
    assert code == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_estimate_predicts_the_h100_runs(
    sparse_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`orch estimate MODEL --hardware h100-sxm-80gb --json -- ARGS` on the runs' own models."""
    for row in read_table(H100_TABLE):
        args = [a for a in shlex.split(row["args"])]
        speed = estimate_json(capsys, sparse_models[row["model"]], args)["speed"]
        assert isinstance(speed, dict)
        measured = float(row["tg_tps"])
        assert abs(speed["decode_tps"] / measured - 1) <= TOLERANCE, (row["name"], speed)


def test_estimate_orders_placements_between_the_measured_ones(
    sparse_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Placements no run measured land where the physics puts them: keeping more expert
    layers on the GPU decodes faster, monotonically, from --cpu-moe up to all on the GPU."""
    base = ["--fit", "off", "-ngl", "99", "-c", "32768", "-np", "1"]
    speeds = []
    for extra in (["--cpu-moe"], ["--n-cpu-moe", "16"], ["--n-cpu-moe", "8"], []):
        speed = estimate_json(capsys, sparse_models["moe"], [*base, *extra])["speed"]
        assert isinstance(speed, dict)
        speeds.append(speed["decode_tps"])
    assert speeds == sorted(speeds)
    assert 73.4 * 0.85 < speeds[0] and speeds[-1] < 457 * 1.15


def test_estimate_without_hardware_says_how_to_get_speed(
    sparse_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estimate", str(sparse_models["dense"]), "--", "-c", "4096"]) == 0
    assert "pass --hardware for a speed estimate" in capsys.readouterr().out


# ---------------------------------------------------------------- graph facts vs the engine


@pytest.mark.parametrize(
    ("row", "splits"), [("m01", 2), ("m08", 50), ("m13", 2), ("d01", 2), ("d04", 2)]
)
def test_graph_splits_match_the_h100_logs(row: str, splits: int) -> None:
    """The decode graph's splits, as llama-server logged them (`graph (... tg bs=1) splits`)."""
    rows = {r["name"]: r for r in read_table(H100_TABLE)}
    arch, tensors, cfg = h100_run(rows[row])
    work = llama_workload(arch, tensors, place(tensors, arch.n_layer, cfg), cfg, "llama.cpp", None)
    assert work.splits == splits


@pytest.mark.parametrize(
    ("profile", "splits"),
    [("qwen3-coder-next-iq4nl-hybrid", 98), ("qwen3-coder-next-iq4nl-gpu", 2)],
)
def test_graph_splits_match_seed_002(profile: str, splits: int) -> None:
    """Seed 002 reports graph_splits 98 with -ot exps=CPU and 2 with everything on the GPU."""
    resolved = resolve(profile)
    assert profile_workload(resolved, model_tensors(resolved, None)[0]).splits == splits


def compute_nodes(binary: Path, model: Path) -> int:
    """Compute nodes of llama-server's decode graph (GGML_SCHED_DEBUG=2 lists them)."""
    port = free_port()
    env = {**os.environ, "GGML_SCHED_DEBUG": "2"}
    argv = [str(binary), "-m", str(model), "-t", "1", "-c", "512", "-np", "1"]
    argv += ["--port", str(port), "-v"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 300  # only against a hang: the loop waits for the log line
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if "listening on" in line or time.monotonic() > deadline:
                break
    finally:
        proc.kill()  # our own child; nothing to shut down gracefully
        proc.communicate(timeout=60)
    text = "".join(lines)
    # the last decode (n_tokens = 1) graph reserved before the server listens
    start = text.rindex("n_tokens =    1")
    graph = re.split(r"graph_reserve|sched_reserve: graph", text[start:])[0]
    return len(re.findall(r"node #\s*\d+ \(", graph))


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "layers"), [(TINY_DENSE, 2), (TINY_DENSE, 4), (TINY_MOE, 4)])
def test_node_counts_match_llama_server(
    spec: SyntheticSpec,
    layers: int,
    llama_server_binary: Path,
    tmp_path: Path,
) -> None:
    """The speed model's compute nodes per token equal what the real llama-server runs."""
    spec = dataclasses.replace(spec, n_layer=layers)
    model = write_gguf(spec, tmp_path / "model.gguf")
    arch = synthetic_architecture(spec)
    tensors = synthetic_tensors(spec)
    cfg = LlamaConfig(ctx=512, parallel=1)
    work = llama_workload(arch, tensors, place(tensors, arch.n_layer, cfg), cfg, "llama.cpp", None)
    assert sum(w.nodes for w in work.devices.values()) == compute_nodes(llama_server_binary, model)


# ---------------------------------------------------------------- physics


def test_decode_threads_scale_until_the_memory_bandwidth_binds() -> None:
    resolved = resolve("llama4-scout-q6k-cpu")
    hardware = resolved.hardware
    work = profile_workload(resolved, model_tensors(resolved, None)[0])

    def speed(threads: int) -> float:
        run = engine_run(
            "llama.cpp",
            "b6500",
            hardware,
            threads=threads,
            threads_batch=None,
            batch=2048,
            ubatch=512,
        )
        return 1 / decode_seconds(work, hardware, run, 0)

    speeds = [speed(t) for t in (1, 2, 4, 8, 16)]
    assert speeds == sorted(speeds)
    # more threads than cores add nothing
    assert speed(32) == pytest.approx(speed(16))
    # with a 100 GB/s memory system the host cap binds long before 16 threads
    slow = hardware.model_copy(
        update={"memory": hardware.memory.model_copy(update={"bandwidth_gbs": 100.0})}
    )
    run = engine_run(
        "llama.cpp", "b6500", slow, threads=16, threads_batch=None, batch=2048, ubatch=512
    )
    bytes_per_token = sum(work.devices[CPU].weights.values())
    assert decode_seconds(work, slow, run, 0) >= bytes_per_token / (80e9)


def test_unfused_gated_deltanet_costs_old_upstream_builds_only() -> None:
    old = predict_profile(
        resolve("qwen3-coder-next-bf16-cpu"), _tensors("qwen3-coder-next-bf16-cpu")
    )
    new = predict_profile(
        resolve("qwen3-coder-next-bf16-cpu", version="latest"),
        _tensors("qwen3-coder-next-bf16-cpu"),
    )
    assert new.decode_tps > 2 * old.decode_tps
    assert old.breakdown[CPU]["serial"] > 0 and new.breakdown[CPU]["serial"] == 0
    assert any("unfused" in n for n in old.notes)
    # ik_llama.cpp has its own CPU delta-net: no such cost whatever its version
    ik = resolve("qwen3-coder-next-bf16-cpu", kind="ik_llama.cpp", version="latest")
    assert predict_profile(ik, _tensors("qwen3-coder-next-bf16-cpu")).breakdown[CPU]["serial"] == 0


def _tensors(name: str) -> list[Tensor]:
    return model_tensors(resolve(name), None)[0]


def test_ik_fuses_the_expert_nodes() -> None:
    """ik_llama.cpp runs a MoE's experts as three ops whatever n_expert_used; upstream, one
    more per expert used."""
    arch = synthetic_architecture(CALIBRATION_MOE)
    tensors = synthetic_tensors(CALIBRATION_MOE)
    cfg = LlamaConfig(
        ctx=4096,
        gpus=("CUDA0",),
        gpu_vram_mib=(81920,),
        overrides=((r"\.ffn_(up|down|gate)_exps", CPU),),
    )
    placed = place(tensors, arch.n_layer, cfg)
    ik = llama_workload(arch, tensors, placed, cfg, "ik_llama.cpp", None)
    up = llama_workload(arch, tensors, placed, cfg, "llama.cpp", None)
    assert ik.devices[CPU].nodes == 3 * arch.n_layer
    assert up.devices[CPU].nodes == (4 + 4) * arch.n_layer  # 4 used experts


def test_context_depth_slows_decode_by_the_kv_it_reads() -> None:
    resolved = resolve("qwen35-397b-iq4")
    speed = predict_profile(resolved, _tensors("qwen35-397b-iq4"))
    assert speed.decode_tps_at_ctx < speed.decode_tps
    work = profile_workload(resolved, _tensors("qwen35-397b-iq4"))
    run = EngineRun("ik_llama.cpp", None, 13, 24)
    hardware = resolved.hardware
    extra = decode_seconds(work, hardware, run, 100_000) - decode_seconds(work, hardware, run, 0)
    arch = resolved.architecture
    kv_per_token = (
        sum(1 for i in range(arch.n_layer) if arch.has_kv(i))
        * 2
        * arch.n_head_kv
        * arch.head_dim
        * 2
    )
    gpu_rate = 1792e9 * hardware.decode.gpu_read_efficiency
    assert extra == pytest.approx(100_000 * kv_per_token / gpu_rate, rel=1e-6)


# ---------------------------------------------------------------- the CLI


def test_plan_table_shows_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--dry-run", "llama4-scout-q6k-cpu"]) == 0
    out = capsys.readouterr().out
    assert "speed (predicted)" in out
    line = next(ln for ln in out.splitlines() if "decode" in ln and "tok/s" not in ln)
    assert re.search(r"\b1[5-9]\.\d\b", line), line


def test_plan_json_speed_fields(capsys: pytest.CaptureFixture[str]) -> None:
    speed = plan_json(capsys, "qwen3-coder-next-iq4nl-hybrid")["speed"]
    assert isinstance(speed, dict)
    assert set(speed) >= {
        "decode_tps",
        "decode_tps_range",
        "decode_tps_at_ctx",
        "prefill_tps",
        "prefill_tps_range",
        "graph_splits",
        "threads",
        "decode_ms_per_token",
    }
    assert speed["graph_splits"] == 98 and speed["threads"] == 13
    assert speed["prefill_tps"] > speed["decode_tps"]
