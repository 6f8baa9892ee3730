"""`orch new --from-gguf`: profiles from synthetic GGUFs validate and their plans fit."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

from orchestrator.app import App
from orchestrator.cli import main
from orchestrator.memory.tensors import GgufHeader, read_gguf
from orchestrator.newprofile import (
    CTX_STEP,
    _Search,
    choose,
    detect_quant,
    pick_port,
    propose,
)
from orchestrator.profiles.loader import Catalog
from orchestrator.profiles.schema import HardwareProfile
from orchestrator.render import make_environment
from orchestrator.settings import load_settings
from orchestrator.synthetic import TINY_DENSE, TINY_MOE, SyntheticSpec, write_gguf
from tests.conftest import PROFILES, TEMPLATES


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {
        "dense": write_gguf(TINY_DENSE, folder / "tiny-dense.gguf"),
        "moe": write_gguf(TINY_MOE, folder / "tiny-moe.gguf"),
    }


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped hardware profiles, no models; settings pointed at it."""
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES / "hardware", root / "hardware")
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("ORCH_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(root))
    return root


def app_for(root: Path) -> App:
    return App(load_settings(profiles_dir=root, templates_dir=TEMPLATES))


@pytest.mark.parametrize("model", ["dense", "moe"])
@pytest.mark.parametrize(
    "hardware", ["small-cpu", "epyc9175f-rtxpro6000", "epyc9175f-2x-rtxpro6000"]
)
def test_new_profile_validates_and_fits(
    model: str,
    hardware: str,
    ggufs: dict[str, Path],
    profiles: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["new", "fresh", "--from-gguf", str(ggufs[model]), "--hardware", hardware]) == 0
    out = capsys.readouterr().out
    assert f"wrote {profiles / 'models' / 'fresh.toml'}" in out
    model_text = (profiles / "models" / "fresh.toml").read_text()
    assert model_text.startswith("# Written by `orch new fresh")
    data = tomllib.loads(model_text)
    assert data["engine"]["kind"] == "llama.cpp"
    assert data["runtime"] == {"kind": "process"}
    assert data["model"]["quant"] == "F16"
    assert data["engine"]["ctx"] == 8192  # tiny models fit their trained context
    if hardware == "small-cpu":
        assert data["engine"]["gpu_layers"] == 0
    else:
        assert data["engine"]["gpu_layers"] == 999

    app = app_for(profiles)
    with_header = app.plan("fresh", read_header=True)
    assert with_header.fits
    assert with_header.weights_source.startswith("GGUF header")
    without_header = app.plan("fresh", read_header=False)  # what `orch validate` does
    assert without_header.fits
    assert main(["validate"]) == 0
    assert main(["plan", "fresh"]) == 0 or hardware != "small-cpu"


def test_refuses_to_overwrite_without_force(
    ggufs: dict[str, Path], profiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["new", "fresh", "--from-gguf", str(ggufs["dense"]), "--hardware", "small-cpu"]
    assert main(argv) == 0
    arch = profiles / "architectures" / "fresh.toml"
    arch.write_text("# edited by hand\n")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists (use --force to overwrite)" in err
    assert arch.read_text() == "# edited by hand\n"
    assert main([*argv, "--force"]) == 0
    assert arch.read_text().startswith("# Written by `orch new fresh")


def test_port_skips_profiles_and_listeners(ggufs: dict[str, Path], profiles: Path) -> None:
    assert main(["new", "one", "--from-gguf", str(ggufs["dense"]), "--hardware", "small-cpu"]) == 0
    assert main(["new", "two", "--from-gguf", str(ggufs["moe"]), "--hardware", "small-cpu"]) == 0
    one = tomllib.loads((profiles / "models" / "one.toml").read_text())["publish"]["port"]
    two = tomllib.loads((profiles / "models" / "two.toml").read_text())["publish"]["port"]
    assert one != two
    assert pick_port({8080, 8081}, lambda p: p == 8082) == 8083


def test_errors_are_clean(
    ggufs: dict[str, Path], profiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.gguf"
    assert main(["new", "x", "--from-gguf", str(missing), "--hardware", "small-cpu"]) == 4
    assert "not found" in capsys.readouterr().err
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    assert main(["new", "x", "--from-gguf", str(junk), "--hardware", "small-cpu"]) == 4
    assert "not a readable GGUF" in capsys.readouterr().err
    assert (
        main(["new", "Bad Name", "--from-gguf", str(ggufs["dense"]), "--hardware", "small-cpu"])
        == 2
    )
    assert main(["new", "x", "--from-gguf", str(ggufs["dense"]), "--hardware", "nope"]) == 2
    assert "no hardware profile 'nope'" in capsys.readouterr().err
    code = main(["new", "x", "--from-gguf", str(ggufs["dense"])])
    err = capsys.readouterr().err
    assert code == 2 and "orch detect --write" in err


def _hardware(ram_gib: float, gpus: list[dict[str, object]] | None = None) -> HardwareProfile:
    return HardwareProfile.model_validate(
        {
            "cpu": {"model": "x", "physical_cores": 2, "threads": 2},
            "memory": {"ram_gib": ram_gib},
            "gpus": gpus or [],
            "budget": {"ram_headroom_gib": 0, "gpu_headroom_mib": 0},
        }
    )


def _search(header: GgufHeader, path: Path, hardware: HardwareProfile) -> _Search:
    from orchestrator.memory.gguf_arch import architecture_from_gguf
    from orchestrator.newprofile import _profile_data

    arch = architecture_from_gguf(header)
    base = _profile_data(
        name="t",
        description="",
        hardware_name="hw",
        model_path=str(path),
        quant="F16",
        port=8080,
        ctx=256,
        jinja=False,
        engine={},
    )
    return _Search("t", "t.toml", base, arch, hardware, "hw", header)


def cpu_need(header: GgufHeader, path: Path, ctx: int) -> int:
    from orchestrator.plan import estimate

    search = _search(header, path, _hardware(1000))
    memory, _, _ = estimate(search.resolved(ctx, {"gpu_layers": 0}), header)
    return memory.devices["CPU"].total


def long_context_gguf(tmp_path: Path) -> Path:
    spec = SyntheticSpec(
        name="long",
        arch="llama",
        n_embd=128,
        n_layer=8,
        n_head=4,
        n_head_kv=4,
        head_dim=32,
        n_ff=256,
        ctx_train=131072,
    )
    return write_gguf(spec, tmp_path / "long.gguf")


def test_ctx_is_the_largest_that_fits(tmp_path: Path) -> None:
    path = long_context_gguf(tmp_path)
    header = read_gguf(path)
    low, high = cpu_need(header, path, 32768), cpu_need(header, path, 65536)
    assert low < high
    hardware = _hardware((low + high) / 2 / 1024**3)
    search = _search(header, path, hardware)
    placement, ctx = choose(search, 131072)
    assert placement.engine == {"gpu_layers": 0}
    assert 32768 <= ctx < 65536
    assert ctx % CTX_STEP == 0
    assert search.fits(ctx, placement.engine)
    assert not search.fits(ctx + CTX_STEP, placement.engine)


def test_partial_offload_when_the_gpu_is_small(tmp_path: Path) -> None:
    path = long_context_gguf(tmp_path)
    header = read_gguf(path)
    search = _search(header, path, _hardware(1000, [{"index": 0, "name": "g", "vram_mib": 1}]))
    placement, ctx = choose(search, 131072)
    assert placement.engine == {"gpu_layers": 0}
    assert "0 of 8 layers" in placement.what
    assert ctx == 131072


def test_nothing_fits_is_a_budget_error(ggufs: dict[str, Path]) -> None:
    from orchestrator.errors import BudgetError

    header = read_gguf(ggufs["dense"])
    with pytest.raises(BudgetError, match="do not fit"):
        propose(
            "t",
            header,
            ggufs["dense"],
            hardware=_hardware(0.01),
            hardware_name="hw",
            templates=make_environment(TEMPLATES),
            port=8080,
        )


def test_quant_from_file_type_and_dominant_type(ggufs: dict[str, Path]) -> None:
    header = read_gguf(ggufs["dense"])
    quant = detect_quant(header)
    assert (quant.label, quant.dominant, quant.recipe) == ("F16", "f16", "F16")
    from dataclasses import replace

    from orchestrator.memory.tensors import Tensor

    q4 = replace(
        header,
        metadata={**header.metadata, "general.file_type": 14},
        tensors=(Tensor("blk.0.ffn_up.weight", (256, 256), "q4_K", 36864),),
    )
    quant = detect_quant(q4)
    assert (quant.label, quant.recipe) == ("Q4_K_S", "Q4_K_M")
    no_type = replace(
        header,
        metadata={k: v for k, v in header.metadata.items() if k != "general.file_type"},
        tensors=(Tensor("blk.0.ffn_up.weight", (256, 256), "q3_K", 27648),),
    )
    quant = detect_quant(no_type)
    assert quant.label == "Q3_K"
    assert quant.recipe in {"Q4_K_M", "IQ4_NL", "IQ4_XS"}


def test_shipped_catalog_untouched() -> None:
    assert "fresh" not in Catalog(PROFILES).model_names()
