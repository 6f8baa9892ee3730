"""GPU compute buffers predicted against llama.cpp's own planning (benchmarks/sched_sim).

No GPU is lent here, so the test runs llama.cpp itself (the b11434 tree and static libraries
that scripts/build-llama-server.sh builds) with a device that follows ggml-cuda's rules on an
H100: llama-server's own argument parser, graph builder, scheduler (op offload, splits, copies)
and graph allocator size every compute buffer, header-only (no_alloc, as --fit plans). It
reproduces the five real H100 runs' logged buffers to 0.02 MiB; the test then holds the memory
model to it across -ngl 0 / partial / full offload, f16 / q8_0 / q4_0 caches, flash attention
on and off, both ubatch sizes and --cpu-moe, on the calibration runs' two models.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sched_sim.compare import (
    build,
    compute_mib,
    grid,
    planned,
    predicted,
    within,
    write_models,
)
from orchestrator.memory.breakdown import MIB
from orchestrator.memory.calibration import read_table
from tests.conftest import REPO

H100_TABLE = REPO / "benchmarks" / "data" / "h100-llama-server.csv"


@pytest.fixture(scope="session")
def sim() -> Path:
    done = build()
    if done.returncode != 0:
        pytest.fail(
            "benchmarks/sched_sim/build.sh failed (it links llama.cpp's static libraries from "
            f"scripts/build-llama-server.sh's build folder):\n{done.stderr[-2000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("sched-models"))


@pytest.mark.parametrize("row", read_table(H100_TABLE), ids=lambda r: r["name"])
def test_the_simulation_reproduces_the_real_h100_buffers(
    sim: Path, models: dict[str, Path], row: dict[str, str]
) -> None:
    args = " ".join(a for a in shlex.split(row["args"]) if a not in ("--fit", "off"))
    got = planned(sim, models[row["model"]], args)
    host = got["CUDA_Host"]["compute"] + got.get("CPU", {}).get("compute", 0)
    # the logs print two decimals: agree to 0.02 MiB
    assert got["CUDA0"]["compute"] / MIB == pytest.approx(float(row["gpu_compute"]), abs=0.02)
    assert host / MIB == pytest.approx(float(row["host_compute"]), abs=0.02)
    assert got["CUDA0"]["context"] / MIB == pytest.approx(float(row["gpu_kv"]), abs=0.02)


@pytest.mark.parametrize(("model", "args"), grid(), ids=lambda v: str(v))
def test_compute_buffers_match_llama_cpps_planning(
    sim: Path, models: dict[str, Path], model: str, args: str
) -> None:
    gpu_sim, host_sim = compute_mib(planned(sim, models[model], args))
    est = predicted(model, args)
    gpu = est.devices["CUDA0"].compute / MIB
    host = est.devices["CPU"].compute / MIB
    assert within(gpu, gpu_sim), f"GPU compute: predicted {gpu:.1f} MiB, llama.cpp {gpu_sim:.1f}"
    assert within(host, host_sim), (
        f"host compute: predicted {host:.1f} MiB, llama.cpp {host_sim:.1f}"
    )
    # a GPU is opened even with nothing on it: its CUDA context is counted
    assert est.devices["CUDA0"].overhead >= 590 * MIB


def test_device_none_keeps_the_engine_off_the_gpu(sim: Path, models: dict[str, Path]) -> None:
    args = "-ngl 0 -c 32768 -np 1 --device none --load-mode none"  # no_alloc cannot map
    got = planned(sim, models["dense"], args)
    assert "CUDA0" not in got and "CUDA_Host" not in got
    assert "CUDA0" not in predicted("dense", args).devices


@pytest.mark.parametrize(
    ("args", "gpu_compute_mib"),
    [
        ("-ngl 0 -c 32768 -np 1", 190.0),
        ("-ngl 99 -c 131072 -np 1 -ctk q8_0 -ctv q8_0", 670.1),
        ("-ngl 10 -c 32768 -np 1", 190.0),
    ],
)
def test_orch_estimate_counts_what_the_engine_takes_on_the_gpu(
    models: dict[str, Path], args: str, gpu_compute_mib: float
) -> None:
    """`orch estimate --hardware h100-sxm-80gb --json`: the CLI the held-out runs are read with."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "estimate",
            str(models["dense"]),
            "--hardware",
            "h100-sxm-80gb",
            "--json",
            "--",
            *shlex.split(args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    gpu = json.loads(done.stdout)["devices"]["CUDA0"]
    assert gpu["overhead"] == 590 * MIB
    assert within(gpu["compute"] / MIB, gpu_compute_mib)


def test_orch_estimate_with_device_none_has_no_gpu(models: dict[str, Path]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "estimate",
            str(models["dense"]),
            "--hardware",
            "h100-sxm-80gb",
            "--json",
            "--",
            "-ngl",
            "0",
            "-c",
            "4096",
            "--device",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)["devices"]) == ["CPU"]


def test_load_mode_changes_host_weights_not_the_gpu() -> None:
    """mmap / mmap+mlock keep the mapped span; none / mlock / dio a pinned buffer of exactly the
    host tensors. The GPU side is the same in every mode."""
    base = "-ngl 10 -c 32768 -np 1"
    by_mode = {
        mode: predicted("dense", f"{base} -lm {mode}")
        for mode in ("mmap", "mmap+mlock", "none", "mlock", "dio")
    }
    gpus = {mode: est.devices["CUDA0"] for mode, est in by_mode.items()}
    assert len(set(gpus.values())) == 1
    host = {mode: est.devices["CPU"].weights for mode, est in by_mode.items()}
    assert host["mmap"] == host["mmap+mlock"]
    assert host["none"] == host["mlock"] == host["dio"]
    assert host["mmap"] >= host["none"]
