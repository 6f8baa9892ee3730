"""The engine adapters: one per engine, each owning what differs between engines."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator.engines import (
    ADAPTERS,
    FUSED_GDN_SINCE_BUILD,
    ArgsError,
    IkLlamaCppAdapter,
    LlamaCppAdapter,
    OffGpu,
    VllmAdapter,
    adapter_for,
    adapter_for_kind,
    llama_adapter,
)
from orchestrator.profiles.loader import Catalog, ResolvedProfile
from orchestrator.profiles.schema import OverrideTensor, VllmEngine
from orchestrator.search import with_engine
from tests.conftest import PROFILES, REPO


def test_one_adapter_per_engine_kind() -> None:
    assert sorted(ADAPTERS) == ["ik_llama.cpp", "llama.cpp", "vllm"]
    catalog = Catalog(PROFILES)
    for name in catalog.model_names():
        engine = catalog.load(name).profile.engine
        assert adapter_for(engine).kind == engine.kind


def test_unknown_kind_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown engine 'llamafile' \(valid: llama.cpp, "):
        adapter_for_kind("llamafile")


@pytest.mark.parametrize(
    ("version", "load_mode_flag", "default_parallel"),
    [("latest", True, 4), ("b10114", True, 4), ("b10113", False, 1), ("5000", False, 1)],
)
def test_upstream_caps_follow_the_build(
    version: str, load_mode_flag: bool, default_parallel: int
) -> None:
    caps = LlamaCppAdapter().caps(version)
    assert caps.load_mode_flag is load_mode_flag
    assert caps.default_parallel == default_parallel
    assert caps.ngl_counts_output and caps.repacks_cpu_weights and not caps.n_cpu_moe_from_end


def test_engine_traits() -> None:
    upstream, ik, vllm = LlamaCppAdapter(), IkLlamaCppAdapter(), VllmAdapter()
    assert (upstream.api_key_variable, ik.api_key_variable, vllm.api_key_variable) == (
        "LLAMA_API_KEY",
        None,
        "VLLM_API_KEY",
    )
    assert upstream.api_key_file_flag and ik.api_key_file_flag and not vllm.api_key_file_flag
    assert ik.key_file_comments_are_keys and not upstream.key_file_comments_are_keys
    assert upstream.reports_timings and ik.reports_timings and not vllm.reports_timings
    assert upstream.reads_gguf and not vllm.reads_gguf
    ik_caps = ik.caps("latest")
    assert ik_caps.grouped_expert_routing and ik_caps.n_cpu_moe_from_end
    assert not ik_caps.ngl_counts_output and not ik_caps.load_mode_flag
    assert vllm.template == "engines/vllm.j2"


def test_request_model_names() -> None:
    catalog = Catalog(PROFILES)
    # the profile name (orch renders --served-model-name / --alias), unless the profile names one
    vllm = catalog.load("llama4-scout-nvfp4").profile
    assert adapter_for(vllm.engine).model_name(vllm, "x") == "x"
    assert adapter_for(vllm.engine).served_name(vllm, "x") == "x"
    named = vllm.model_copy(
        update={"engine": vllm.engine.model_copy(update={"served_model_name": "scout"})}
    )
    assert adapter_for(named.engine).served_name(named, "x") == "scout"
    llama = catalog.load("demo").profile
    assert adapter_for(llama.engine).model_name(llama, "demo") == "demo"
    assert adapter_for(llama.engine).served_name(llama, "demo") is None
    aliased = llama.model_copy(
        update={"engine": llama.engine.model_copy(update={"extra_args": ("-a", "tiny")})}
    )
    assert adapter_for(aliased.engine).model_name(aliased, "demo") == "tiny"


def test_placement_and_argv_parsing_are_llama_server_only() -> None:
    engine = Catalog(PROFILES).load("llama4-scout-nvfp4").profile.engine
    with pytest.raises(TypeError, match="vllm is not a llama-server engine"):
        llama_adapter(engine)


# Modules that may branch on the engine: the adapters, and the profile schema and loader that
# define the settings types. Everything else (plan, sizing, speed, autoplace, lifecycle, gateway,
# bench, cli, ...) asks the adapter.
MAY_BRANCH = ("orchestrator/engines/", "orchestrator/profiles/")
ENGINE_BRANCH = re.compile(
    r"isinstance\([^)]*(LlamaEngine|VllmEngine|Adapter\b)"
    r"|(==|!=)\s*[\"'](llama\.cpp|ik_llama\.cpp|vllm)[\"']"
    r"|[\"'](llama\.cpp|ik_llama\.cpp|vllm)[\"']\s*(==|!=)"
)


@pytest.mark.parametrize(
    "line",
    [
        "if isinstance(engine, VllmEngine):",
        "assert isinstance(plan.profile.engine, LlamaEngine)",
        'if engine.kind == "ik_llama.cpp":',
        "if kind != 'llama.cpp':",
        'fa_f16_pool=engine.kind == "ik_llama.cpp",',
        'if "vllm" == kind:',
    ],
)
def test_the_branch_check_sees_engine_branches(line: str) -> None:
    assert ENGINE_BRANCH.search(line)


def test_no_engine_type_branches_outside_the_adapters() -> None:
    found = []
    for path in sorted((REPO / "orchestrator").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(MAY_BRANCH):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ENGINE_BRANCH.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_branch_check_covers_the_new_modules() -> None:
    """The check walks every module, the gateway's, bench's and the CLI's included."""
    walked = {p.relative_to(REPO).as_posix() for p in (REPO / "orchestrator").rglob("*.py")}
    for module in (
        "orchestrator/speed.py",
        "orchestrator/lifecycle.py",
        "orchestrator/gateway/pool.py",
        "orchestrator/bench/schedule.py",
        "orchestrator/cli/bench.py",
        "orchestrator/cli/lifecycle.py",
    ):
        assert module in walked and not module.startswith(MAY_BRANCH)


# ---------------------------------------------------------------- what the merged modules ask


def _with(name: str, hardware: str | None = None, **engine: object) -> ResolvedProfile:
    return with_engine(Catalog(PROFILES).load(name, hardware), **engine)


def test_off_gpu_is_the_engines_own_way() -> None:
    upstream = _with("qwen3-coder-next-iq4nl-gpu", kind="llama.cpp", gpu_layers=0)
    ik = _with("qwen3-coder-next-iq4nl-gpu", kind="ik_llama.cpp", gpu_layers=0)
    for resolved in (upstream, ik):
        assert adapter_for(resolved.profile.engine).stays_off_gpu(resolved.profile.engine)
    assert adapter_for(upstream.profile.engine).off_gpu(upstream.profile.engine) == OffGpu(
        device="none"
    )
    assert adapter_for(ik.profile.engine).off_gpu(ik.profile.engine) == OffGpu(
        env=(("CUDA_VISIBLE_DEVICES", ""),)
    )
    # a rule to a GPU, or layers on one: the engine needs the GPU
    on_gpu = _with(
        "qwen3-coder-next-iq4nl-gpu",
        gpu_layers=0,
        override_tensors=(OverrideTensor(pattern="output", device="CUDA0"),),
    )
    for resolved in (on_gpu, _with("qwen3-coder-next-iq4nl-gpu")):
        assert adapter_for(resolved.profile.engine).off_gpu(resolved.profile.engine) is None
    vllm = Catalog(PROFILES).load("llama4-scout-nvfp4").profile.engine
    assert adapter_for(vllm).off_gpu(vllm) is None


def test_memory_config_sizes_an_off_gpu_profile_on_no_gpu() -> None:
    gpus = [("CUDA0", 97887)]
    for kind, pool in (("llama.cpp", False), ("ik_llama.cpp", True)):
        resolved = _with("qwen3-coder-next-iq4nl-gpu", kind=kind)
        adapter = llama_adapter(resolved.profile.engine)
        cfg = adapter.config_for(resolved, gpus)
        assert cfg.gpus == ("CUDA0",) and cfg.fa_f16_pool is pool
        off = with_engine(resolved, gpu_layers=0)
        assert adapter.config_for(off, gpus).gpus == ()


def test_slots_and_request_tokens() -> None:
    catalog = Catalog(PROFILES)
    vllm = catalog.load("llama4-scout-nvfp4").profile.engine
    assert isinstance(vllm, VllmEngine)
    assert adapter_for(vllm).slots(vllm) == vllm.max_num_seqs
    assert adapter_for(vllm).request_tokens(vllm) == vllm.max_model_len
    demo = catalog.load("demo")
    cases: list[tuple[dict[str, Any], int, int]] = [
        ({"kind": "llama.cpp", "parallel": None}, 4, 2048),  # auto: 4 slots, one stream
        ({"kind": "ik_llama.cpp", "parallel": None}, 1, 2048),
        ({"kind": "llama.cpp", "parallel": 4, "kv_unified": False}, 4, 512),
        ({"kind": "llama.cpp", "parallel": 4, "kv_unified": True}, 4, 2048),
    ]
    for settings, slots, tokens in cases:
        engine = with_engine(demo, **settings).profile.engine
        assert adapter_for(engine).slots(engine) == slots, settings
        assert adapter_for(engine).request_tokens(engine) == tokens, settings


def test_graph_caps_the_speed_model_reads() -> None:
    upstream, ik = LlamaCppAdapter(), IkLlamaCppAdapter()
    assert not upstream.caps(f"b{FUSED_GDN_SINCE_BUILD - 1}").fused_gated_delta_net
    assert upstream.caps(f"b{FUSED_GDN_SINCE_BUILD}").fused_gated_delta_net
    assert upstream.caps("latest").fused_gated_delta_net
    assert ik.caps("latest").fused_gated_delta_net and ik.caps("latest").fused_moe
    assert not upstream.caps("latest").fused_moe
    assert upstream.caps("latest").device_none and not ik.caps("latest").device_none


@pytest.mark.parametrize(
    ("device", "gpus"),
    [("none", ()), ("CUDA1", ("CUDA1",)), ("CUDA0,CUDA1", ("CUDA0", "CUDA1"))],
)
def test_parse_args_keeps_the_devices_named(device: str, gpus: tuple[str, ...]) -> None:
    cfg = LlamaCppAdapter().parse_args(
        ["-c", "4096", "--device", device],
        gpus=("CUDA0", "CUDA1"),
        gpu_vram_mib=(1000, 2000),
        cuda_context_mib=590,
        moe_layers=[],
    )
    assert cfg.gpus == gpus
    assert cfg.gpu_vram_mib == tuple({"CUDA0": 1000, "CUDA1": 2000}[g] for g in gpus)


def test_parse_args_refuses_a_device_that_is_not_here() -> None:
    with pytest.raises(ArgsError, match=r"--device: CUDA7 is not a GPU here \(CUDA0\)"):
        LlamaCppAdapter().parse_args(
            ["-dev", "CUDA7"], gpus=("CUDA0",), gpu_vram_mib=(1,), cuda_context_mib=0, moe_layers=[]
        )
