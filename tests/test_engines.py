"""The engine adapters: one per engine, each owning what differs between engines."""

from __future__ import annotations

import re

import pytest

from orchestrator.engines import (
    ADAPTERS,
    IkLlamaCppAdapter,
    LlamaCppAdapter,
    VllmAdapter,
    adapter_for,
    adapter_for_kind,
    llama_adapter,
)
from orchestrator.profiles.loader import Catalog
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
    vllm = catalog.load("llama4-scout-nvfp4").profile
    assert adapter_for(vllm.engine).model_name(vllm, "x") == vllm.model.hf_repo
    assert adapter_for(vllm.engine).served_name(vllm, "x") == vllm.model.hf_repo
    llama = catalog.load("demo").profile
    assert adapter_for(llama.engine).model_name(llama, "demo") == "demo"
    assert adapter_for(llama.engine).served_name(llama, "demo") is None


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
