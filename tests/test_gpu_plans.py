"""What plans render and count for the GPU: a profile kept off it, and flash attention's F16 copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.memory.breakdown import MIB
from orchestrator.memory.llama import fa_f16_copy_bytes
from orchestrator.plan import Plan, build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from orchestrator.sizing import llama_config_for
from tests.conftest import PROFILES, TEMPLATES, shipped_plan

PROFILE = """\
architecture = "qwen3-coder-next"
hardware = "{hardware}"

[model]
path = "/models/q.gguf"
quant = "IQ4_NL"

[engine]
kind = "{kind}"
ctx = {ctx}
gpu_layers = {ngl}
{engine}

[runtime]
{runtime}

[publish]
port = 8001
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    return Catalog(root)


def plan(
    catalog: Catalog,
    *,
    kind: str = "llama.cpp",
    ngl: int = 0,
    hardware: str = "epyc9175f-rtxpro6000",
    runtime: str = 'kind = "process"',
    engine: str = "",
    ctx: int = 8192,
) -> Plan:
    text = PROFILE.format(
        kind=kind, ngl=ngl, hardware=hardware, runtime=runtime, engine=engine, ctx=ctx
    )
    (catalog.root / "models" / "p.toml").write_text(text, encoding="utf-8")
    return build_plan(catalog.load("p"), make_environment(TEMPLATES))


def option(argv: tuple[str, ...], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_llama_cpp_with_nothing_on_the_gpu_renders_device_none(catalog: Catalog) -> None:
    p = plan(catalog)
    assert option(p.engine_argv, "--device") == "none"
    assert list(p.memory.devices) == ["CPU"]
    assert [b.device for b in p.budget] == ["CPU"]
    assert "CUDA_VISIBLE_DEVICES" not in p.env


def test_ik_with_nothing_on_the_gpu_hides_the_gpus_from_cuda(catalog: Catalog) -> None:
    p = plan(catalog, kind="ik_llama.cpp")
    assert "--device" not in p.engine_argv
    assert p.env["CUDA_VISIBLE_DEVICES"] == ""
    assert p.display().startswith("env CUDA_VISIBLE_DEVICES= ")
    assert list(p.memory.devices) == ["CPU"]


def test_ik_in_podman_with_gpus_hides_them_in_the_container(catalog: Catalog) -> None:
    runtime = 'kind = "podman"\nimage = "x"\ndevices = ["nvidia.com/gpu=all"]'
    p = plan(catalog, kind="ik_llama.cpp", runtime=runtime)
    outer = p.argv[: p.argv.index("x")]
    assert "CUDA_VISIBLE_DEVICES=" in outer
    assert outer[outer.index("CUDA_VISIBLE_DEVICES=") - 1] == "-e"


@pytest.mark.parametrize(
    ("hardware", "runtime", "engine", "ngl"),
    [
        ("small-cpu", 'kind = "process"', "", 0),  # no GPU to keep off
        ("epyc9175f-rtxpro6000", 'kind = "podman"\nimage = "x"', "", 0),  # container sees none
        ("epyc9175f-rtxpro6000", 'kind = "process"', "", 5),
        (
            "epyc9175f-rtxpro6000",
            'kind = "process"',
            '[[engine.override_tensors]]\npattern = "attn"\ndevice = "CUDA0"',
            0,
        ),
    ],
    ids=["no-gpus", "podman-without-gpu", "layers-on-gpu", "ot-to-gpu"],
)
def test_nothing_is_kept_off_a_gpu_the_engine_uses_or_cannot_see(
    catalog: Catalog, hardware: str, runtime: str, engine: str, ngl: int
) -> None:
    p = plan(catalog, hardware=hardware, runtime=runtime, engine=engine, ngl=ngl)
    assert option(p.engine_argv, "--device") != "none"
    assert "CUDA_VISIBLE_DEVICES" not in p.env


def test_upstream_quantized_cache_puts_the_f16_copies_in_the_compute_buffer(
    catalog: Catalog,
) -> None:
    engine = 'cache_type_k = "q8_0"\ncache_type_v = "q8_0"\nflash_attn = "on"'
    f16 = plan(catalog, ngl=99, engine='flash_attn = "on"', ctx=262144).memory
    q8 = plan(catalog, ngl=99, engine=engine, ctx=262144)
    copies = int(q8.memory.facts["fa_f16_copies"])
    assert copies == fa_f16_copy_bytes(
        catalog.load("p").architecture, llama_config_for(catalog.load("p"))
    )
    assert q8.memory.devices["CUDA0"].overhead == 590 * MIB
    assert q8.memory.devices["CUDA0"].compute > f16.devices["CUDA0"].compute
    assert any("F16" in note and "compute buffer" in note for note in q8.memory.notes)


def test_seed_003_two_gpu_q8_0_counts_ik_pool_copies_on_each_gpu() -> None:
    """Seed 003's 2-GPU profile: ik_llama.cpp converts the q8_0 K and V of one layer to F16
    in the CUDA pool at run time, on each GPU that holds KV layers."""
    p = shipped_plan("qwen35-397b-iq4-2gpu")
    arch = p.memory.facts
    copies = int(arch["fa_f16_copies"])
    # Qwen3.5-397B: 2 KV heads of 256, 135168 cells, K and V as F16
    assert copies == 2 * 2 * 256 * 135168 * 2
    for gpu in ("CUDA0", "CUDA1"):
        assert p.memory.devices[gpu].overhead == 590 * MIB + copies
    assert p.fits
