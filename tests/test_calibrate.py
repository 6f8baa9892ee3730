"""`orch calibrate`: real probes with the real llama-server, written into a profile copy."""

from __future__ import annotations

import shutil
import tomllib
from datetime import date
from pathlib import Path

import pytest

from orchestrator.calibrate import calibrated_source, replace_tables
from orchestrator.cli import main
from orchestrator.profiles.loader import Catalog, parse_hardware
from tests.conftest import PROFILES


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(root))
    return root


@pytest.mark.slow
def test_calibrate_measures_and_writes_a_profile(
    profiles: Path, llama_server_binary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = profiles / "hardware" / "small-cpu.toml"
    path.write_text(path.read_text().split("\n# Speed constants")[0] + "\n")  # uncalibrated
    before = path.read_text()
    args = ["calibrate", "small-cpu", "--binary", str(llama_server_binary)]
    code = main([*args, "--types", "f16,q4_0", "--budget", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"wrote {path}" in out
    text = path.read_text()
    assert text.startswith(before.rstrip())  # every other table and comment kept
    hardware = parse_hardware(text, str(path))
    decode, prefill = hardware.decode, hardware.prefill
    assert decode.source.startswith(f"orch calibrate {date.today().isoformat()}: llama.cpp")
    assert str(llama_server_binary) in decode.source
    assert "# Speed constants: orch calibrate" in text
    rates = decode.thread_gbs["llama.cpp"]
    assert set(rates) == {"f16", "q4_0"}
    # one core streams a few to tens of GB/s; anything else is a broken measurement
    assert all(1 < r < 200 for r in rates.values()), rates
    assert 0 < decode.cpu_node_us < 1000
    gflops = prefill.thread_gflops["llama.cpp"]
    assert all(1 < g < 1000 for g in gflops.values()), gflops
    # the demo profile now plans with the measured constants
    capsys.readouterr()
    assert main(["plan", "--dry-run", "--json", "demo"]) == 0
    assert '"decode_tps"' in capsys.readouterr().out
    # the shipped profile is untouched
    assert Catalog(PROFILES).hardware("small-cpu").decode.thread_gbs["llama.cpp"]["f16"] > 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nosuch"], 2, "HARDWARE: no hardware profile 'nosuch'"),
        (["small-cpu", "--types", "f16,q9_9"], 2, "--types: unknown ggml type(s) q9_9"),
        (["small-cpu", "--binary", "/nonexistent/llama-server"], 4, "no such llama-server"),
    ],
)
def test_calibrate_errors(
    profiles: Path,
    args: list[str],
    code: int,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["calibrate", *args]) == code
    assert message in capsys.readouterr().err


TOML = """\
description = "x"

[cpu]
model = "m"   # kept
physical_cores = 2
threads = 2

[memory]
ram_gib = 8

# old note on decode
[decode]
cpu_node_us = 9.0

[decode.thread_gbs."llama.cpp"]
f16 = 1.0

[[gpus]]
index = 0
name = "g"
vram_mib = 1000
"""


def test_replace_tables_keeps_everything_else() -> None:
    new = replace_tables(
        TOML,
        {"decode": {"cpu_node_us": 4.5, "thread_gbs": {"llama.cpp": {"f16": 20.0}}}},
        ["measured today"],
        {"decode": {"cpu_node_us": "barrier", "thread_gbs.llama.cpp.f16": "one thread"}},
    )
    assert 'model = "m"   # kept' in new
    assert "old note on decode" not in new
    assert "# measured today\n[decode]\ncpu_node_us = 4.5  # barrier\n" in new
    assert '[decode.thread_gbs."llama.cpp"]\nf16 = 20.0  # one thread' in new
    data = tomllib.loads(new)
    assert data["gpus"][0]["name"] == "g"  # an array of tables after [decode] survives
    assert data["decode"]["thread_gbs"]["llama.cpp"]["f16"] == 20.0


def test_calibrated_source_keeps_the_latest_run_of_each_engine() -> None:
    day = date(2026, 11, 30)
    first = calibrated_source("", "llama.cpp", "b1 (/a)", day)
    both = calibrated_source(first, "ik_llama.cpp", "ik (/b)", day)
    again = calibrated_source(both, "llama.cpp", "b2 (/a)", date(2026, 12, 1))
    assert first == "orch calibrate 2026-11-30: llama.cpp b1 (/a)"
    assert again == (
        "orch calibrate 2026-11-30: ik_llama.cpp ik (/b); 2026-12-01: llama.cpp b2 (/a)"
    )
    # a hand-written source is replaced, not merged
    assert calibrated_source("spec sheet", "llama.cpp", "b3", day).count(";") == 0
