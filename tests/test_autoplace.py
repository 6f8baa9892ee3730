"""``placement = "auto"``: the choice, its search bounds, its margin, and the speed model."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.autoplace import ALL_LAYERS, AutoPlacement, Candidate, _Search, as_auto
from orchestrator.cli import main
from orchestrator.errors import BudgetError
from orchestrator.memory.llama import CPU, place
from orchestrator.plan import Plan, build_plan, model_tensors, require_fit
from orchestrator.profiles.loader import Catalog, ResolvedProfile
from orchestrator.render import make_environment
from orchestrator.sizing import llama_config_for
from orchestrator.speed import llama_workload
from tests.conftest import PROFILES, TEMPLATES


def resolve(name: str, root: Path = PROFILES) -> ResolvedProfile:
    return Catalog(root).load(name)


def plan_of(resolved: ResolvedProfile) -> Plan:
    return build_plan(resolved, make_environment(TEMPLATES))


def chosen(plan: Plan) -> Candidate:
    assert plan.placement is not None and plan.placement.chosen is not None
    return plan.placement.chosen


def search_for(resolved: ResolvedProfile) -> _Search:
    return _Search(resolved, model_tensors(resolved, None)[0])


# ---------------------------------------------------------------- choices on shipped profiles


def test_single_gpu_keeps_the_most_layers_experts_that_fit() -> None:
    resolved = resolve("qwen35-397b-iq4-auto")
    plan = plan_of(resolved)
    pick = chosen(plan)
    assert pick.strategy == "n-cpu-moe"
    k = pick.settings["n_cpu_moe"]
    assert f"--n-cpu-moe {k}" in " ".join(plan.engine_argv)
    assert "--cpu-moe" not in plan.engine_argv
    # k is the fewest layers whose experts must leave the GPU: one fewer does not fit
    search = search_for(resolved)
    assert search.gpus_fit({"gpu_layers": ALL_LAYERS, "n_cpu_moe": k})
    assert not search.gpus_fit({"gpu_layers": ALL_LAYERS, "n_cpu_moe": k - 1})
    assert plan.fits
    by = {c.strategy: c for c in plan.placement.considered}  # type: ignore[union-attr]
    assert pick.tokens_per_s > by["cpu-moe"].tokens_per_s  # beats the seed's --cpu-moe
    assert pick.tokens_per_s > by["ngl"].tokens_per_s  # and plain partial offload
    assert not by["all-gpu"].fits


def test_two_gpus_write_per_gpu_expert_rules_like_seed_003() -> None:
    resolved = resolve("qwen35-397b-iq4-2gpu-auto")
    plan = plan_of(resolved)
    pick = chosen(plan)
    assert pick.strategy == "gpu-experts"
    rules = pick.settings["override_tensors"]
    assert [r.device for r in rules] == ["CUDA0", "CUDA1"]
    argv = list(plan.engine_argv)
    assert argv.index("--override-tensor") < argv.index("--cpu-moe")  # rules win over it
    # each GPU is full: one more layer's experts on it would not fit
    search = search_for(resolved)
    layer_gpu = search.layer_gpus()
    for rule in rules:
        gpu = rule.device
        kept = [int(n) for n in rule.pattern.split("(")[1].split(")")[0].split("|")]
        own = [i for i, g in layer_gpu.items() if g == gpu]
        assert kept == own[: len(kept)]
        bigger = (
            type(rule)(pattern=rule.pattern.replace(")", f"|{own[len(kept)]})", 1), device=gpu),
        )
        settings = {"gpu_layers": ALL_LAYERS, "cpu_moe": True, "override_tensors": bigger}
        assert not search.gpus_fit(settings, only=gpu)
    by = {c.strategy: c for c in plan.placement.considered}  # type: ignore[union-attr]
    assert pick.tokens_per_s == max(c.tokens_per_s for c in by.values() if c.fits)


def test_every_gpu_keeps_the_auto_margin() -> None:
    for name in ("qwen35-397b-iq4-auto", "qwen35-397b-iq4-2gpu-auto"):
        plan = plan_of(resolve(name))
        hardware = resolve(name).hardware
        keep = 1 - hardware.budget.auto_margin_fraction
        for b in plan.budget:
            if b.device != CPU:
                assert b.need <= b.capacity * keep, (name, b)


def test_all_on_gpu_when_it_fits() -> None:
    plan = plan_of(as_auto(resolve("qwen3-coder-next-iq4nl-hybrid")))
    pick = chosen(plan)
    assert pick.strategy == "all-gpu"
    assert "--override-tensor" not in plan.engine_argv
    assert len(plan.placement.considered) == 1  # type: ignore[union-attr]


def small_gpu_profiles(tmp_path: Path, vram_mib: int) -> Path:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    hw = root / "hardware" / "epyc9175f-rtxpro6000.toml"
    hw.write_text(hw.read_text().replace("vram_mib = 97887", f"vram_mib = {vram_mib}"))
    return root


def test_dense_model_gets_the_most_layers_that_fit(tmp_path: Path) -> None:
    root = small_gpu_profiles(tmp_path, 24576)
    text = (root / "models" / "iquest-coder-40b-q5km-cpu.toml").read_text()
    start, end = text.index("[runtime]"), text.index("[publish]")
    text = text[:start] + '[runtime]\nkind = "process"\n\n' + text[end:]
    (root / "models" / "dense.toml").write_text(
        text.replace("[engine]", '[engine]\nplacement = "auto"')
    )
    resolved = resolve("dense", root)
    plan = plan_of(resolved)
    pick = chosen(plan)
    assert pick.strategy == "ngl"
    layers = pick.settings["gpu_layers"]
    assert 0 < layers < resolved.architecture.n_layer
    search = search_for(resolved)
    assert search.gpus_fit({"gpu_layers": layers})
    assert not search.gpus_fit({"gpu_layers": layers + 1})
    argv = list(plan.engine_argv)
    assert argv[argv.index("--gpu-layers") + 1] == str(layers)


def test_cpu_only_hardware_plans_cpu_only() -> None:
    plan = plan_of(as_auto(resolve("demo")))
    pick = chosen(plan)
    assert pick.strategy == "cpu"
    assert [b.device for b in plan.budget] == [CPU]


def test_nothing_fits_says_what_would(tmp_path: Path) -> None:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    hw = root / "hardware" / "epyc9175f-rtxpro6000.toml"
    hw.write_text(hw.read_text().replace("ram_gib = 768\n", "ram_gib = 134\n", 1))
    plan = plan_of(resolve("qwen35-397b-iq4-auto", root))
    assert plan.placement is not None and plan.placement.chosen is None
    assert not plan.fits
    assert plan.suggestions and "placement orch chooses" in plan.suggestions[0]
    assert not any("cpu_moe" in s for s in plan.suggestions)
    with pytest.raises(BudgetError, match="does not fit"):
        require_fit(plan)
    # the suggested ctx really fits with the placement orch then chooses
    ctx = int(plan.suggestions[0].split("=")[1].split()[0])
    text = (root / "models" / "qwen35-397b-iq4-auto.toml").read_text()
    (root / "models" / "smaller.toml").write_text(text.replace("ctx = 262144", f"ctx = {ctx}"))
    assert plan_of(resolve("smaller", root)).fits


# ---------------------------------------------------------------- the speed model


def test_candidates_are_ranked_by_the_speed_model() -> None:
    """The chosen candidate's estimate is the plan's own decode prediction (orchestrator.speed)."""
    for name in ("qwen35-397b-iq4-auto", "qwen35-397b-iq4-2gpu-auto"):
        plan = plan_of(resolve(name))
        assert plan.speed is not None
        assert chosen(plan).tokens_per_s == pytest.approx(plan.speed.decode_tps, rel=1e-9)


def test_experts_count_by_share_read() -> None:
    resolved = resolve("qwen35-397b-iq4")
    tensors, _ = model_tensors(resolved, None)
    cfg = llama_config_for(resolved)
    everything_on_host = replace(
        place(tensors, resolved.architecture.n_layer, cfg),
        tensor_device=dict.fromkeys((t.name for t in tensors), CPU),
    )
    work = llama_workload(
        resolved.architecture, tensors, everything_on_host, cfg, "ik_llama.cpp", None
    )
    read = sum(work.devices[CPU].weights.values())
    moe = resolved.architecture.moe
    assert moe is not None
    experts = sum(t.nbytes for t in tensors if t.kind == "ffn_exps")
    rest = sum(t.nbytes for t in tensors if t.kind not in ("ffn_exps", "token_embd"))
    expected = rest + experts * moe.n_expert_used / moe.n_expert
    assert abs(read - expected) <= len(tensors) + resolved.architecture.n_embd * 4


# ---------------------------------------------------------------- the CLI


def test_plan_placement_auto_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--dry-run", "--placement", "auto", "qwen35-397b-iq4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "placement auto: strategies considered" in out
    chosen_lines = [ln for ln in out.splitlines() if ln.strip().startswith("->")]
    assert len(chosen_lines) == 1 and "n-cpu-moe" in chosen_lines[0]
    assert "--n-cpu-moe" in out and "--cpu-moe \\" not in out


def test_plan_json_lists_alternatives(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--dry-run", "--json", "qwen35-397b-iq4-auto"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    placement = data["placement"]
    assert placement["chosen"] == "n-cpu-moe"
    strategies = [c["strategy"] for c in placement["considered"]]
    assert strategies == ["all-gpu", "n-cpu-moe", "cpu-moe", "ngl", "cpu"]
    assert all(
        set(c) >= {"flags", "fits", "need", "est_tokens_per_s"} for c in placement["considered"]
    )


def test_manual_profiles_have_no_placement_report() -> None:
    assert plan_of(resolve("qwen35-397b-iq4")).placement is None
    assert isinstance(AutoPlacement(None, ()).to_json(), dict)


def test_over_only_by_the_margin_is_not_a_fitting_plan(tmp_path: Path) -> None:
    """Nothing fits with the margin kept: the plan must not fit either, even if the placement it
    falls back to would fit without the margin."""
    resolved = as_auto(resolve("qwen3-coder-next-iq4nl-gpu"))
    plan = plan_of(resolved)
    gpu_need = next(b.need for b in plan.budget if b.device == "CUDA0")
    host_need = next(b.need for b in plan.budget if b.device == CPU)
    hardware = resolved.hardware
    capacity_mib = gpu_need / 0.985 / (1 << 20)  # need is 98.5 % of the budget: inside margin
    vram = int(capacity_mib) + hardware.budget.gpu_headroom_mib + 1
    ram_gib = (host_need + (64 << 20)) / (1 << 30) + hardware.budget.ram_headroom_gib
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    hw = root / "hardware" / "epyc9175f-rtxpro6000.toml"
    text = hw.read_text().replace("vram_mib = 97887", f"vram_mib = {vram}")
    hw.write_text(text.replace("ram_gib = 768\n", f"ram_gib = {ram_gib:.4f}\n", 1))
    tight = plan_of(as_auto(resolve("qwen3-coder-next-iq4nl-gpu", root)))
    assert tight.placement is not None and tight.placement.chosen is None
    assert not tight.fits
    with pytest.raises(BudgetError):
        require_fit(tight)


def test_n_cpu_moe_counts_blocks_upstream_and_moe_layers_in_ik() -> None:
    from orchestrator.memory.llama import n_cpu_moe_rules

    moe_layers = [1, 3, 5, 7]  # every other block is MoE (Llama 4 Maverick style)
    upstream = [rule for rule, _ in n_cpu_moe_rules(3, moe_layers, from_end=False)]
    assert [r.split("\\.")[1] for r in upstream] == ["0", "1", "2"]
    ik = [rule for rule, _ in n_cpu_moe_rules(2, moe_layers, from_end=True)]
    assert [r.split("\\.")[1] for r in ik] == ["5", "7"]


def test_placement_auto_on_vllm_says_it_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["plan", "--dry-run", "--placement", "auto", "llama4-scout-nvfp4"])
    captured = capsys.readouterr()
    assert code == 0
    assert "--placement auto applies to llama.cpp engines" in captured.err
    assert "placement auto: strategies considered" not in captured.out
