"""Regenerate the speed constants of the shipped hardware profiles from their sources.

    python -m benchmarks.fit_speed           # rewrite [decode] / [prefill] of the profiles below
    python -m benchmarks.fit_speed --check   # exit 1 if that would change anything

- h100-sxm-80gb: every constant the five committed H100 runs determine is fitted on them
  (benchmarks/data/h100-llama-server.csv), nothing else.
- epyc9175f-rtxpro6000 / epyc9175f-2x-rtxpro6000 (the seeds' machine, which orch cannot run on):
  per-thread rates measured on the sandbox by `orch calibrate` (profiles/hardware/small-cpu.toml),
  GPU read efficiency, split and graph-node costs from the H100 fit, clock and bandwidths from
  spec sheets, and two constants fitted on the two seed figures allowed for it: gpu_node_us on
  seed 002's all-GPU run, thread_scale on seed 003's --cpu-moe runs.

small-cpu.toml itself is measurement (`orch calibrate small-cpu`), not regenerated here.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

from orchestrator.calibrate import replace_tables
from orchestrator.profiles.loader import Catalog, parse_hardware
from orchestrator.profiles.schema import Decode, HardwareProfile
from orchestrator.speedcheck import fit_h100, fit_seed_machine
from orchestrator.speedfit import THREAD_SCALE, thread_key

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "profiles"
H100_TABLE = ROOT / "benchmarks" / "data" / "h100-llama-server.csv"
H100 = "h100-sxm-80gb"
EPYC = ("epyc9175f-rtxpro6000", "epyc9175f-2x-rtxpro6000")
SANDBOX = "small-cpu"

H100_TFLOPS = 989.0
"""H100 SXM5 dense FP16/BF16 tensor throughput (NVIDIA H100 datasheet)."""
RTX_PRO_6000_MAXQ_TFLOPS = 438.9
"""RTX PRO 6000 Blackwell Max-Q dense FP16 tensor throughput: its datasheet's 3,511 AI TOPS
(FP4 with sparsity) / 2 for dense / 4 from FP4 to FP16."""
EPYC_CLOCK_GHZ = 5.0
"""AMD EPYC 9175F max boost (AMD product page)."""
PCIE5_X16_GBS = 50.0
"""PCIe 5.0 x16: 64 GB/s per direction on paper, about 50 reached by pinned copies."""
HOST_READ_EFFICIENCY = 0.8
"""Share of the DIMMs' peak that many streaming cores reach (STREAM-class); with 13-16 decode
threads the per-thread rates bind first, so no seed figure depends on it."""
IQ4_KSS_LIKE = "iq4_nl"
"""On AVX-512 ik_llama.cpp unpacks IQ4_KSS about as fast as its sibling types (its PR #89:
"Zen4 is also mostly OK ... on AVX2 ... performance is noticeably lower"); the sandbox's build
is AVX2, where it measured 7.2 GB/s per thread, so the seeds' Zen 5 machine takes ik's IQ4_NL
rate for it."""


def _round(value: float, digits: int = 3) -> float:
    if value == 0:
        return 0.0
    return round(value, max(digits - int(math.floor(math.log10(abs(value)))) - 1, 0))


def error_fraction(errors: dict[str, float]) -> float:
    """The largest held-out error, rounded up to the next 5 %."""
    worst = max(abs(e) for e in errors.values())
    return math.ceil(worst * 20) / 20


def h100_tables(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """[decode] and [prefill] of the H100 profile, and the comments on them."""
    hardware = catalog.hardware(H100)
    result = fit_h100(H100_TABLE, hardware)
    c = result.constants
    f16 = c[thread_key("llama.cpp", "f16")]
    errors = ", ".join(f"{name} {100 * e:+.1f} %" for name, e in result.errors.items())
    decode = {
        "source": "fitted on the 5 runs of benchmarks/data/h100-llama-server.csv "
        "(python -m benchmarks.fit_speed)",
        "gpu_read_efficiency": _round(c["gpu_read_efficiency"]),
        "gpu_node_us": _round(c["gpu_node_us"]),
        "split_us": _round(c["split_us"]),
        "cpu_node_us": _round(c["cpu_node_us"]),
        "default_thread_gbs": _round(f16),
        "error_fraction": error_fraction(result.errors),
        "thread_gbs": {"llama.cpp": {"f16": _round(f16)}},
    }
    comments = {
        "gpu_read_efficiency": "fitted: of the H100's 3,350 GB/s",
        "gpu_node_us": "fitted: per compute node of the decode graph (CUDA graphs on)",
        "split_us": "fitted: per switch between GPU and host",
        "cpu_node_us": "fitted: per host graph node, 16 threads",
        "default_thread_gbs": "the F16 rate: 16 threads read 88 GB/s, memory-bound (F16C "
        "kernels compute far faster), so other types stream the same bytes",
        "error_fraction": f"largest leave-one-out error, rounded up ({errors})",
        "thread_gbs.llama.cpp.f16": "fitted: per decode thread, F16 weights",
    }
    prefill = {
        "source": "spec sheet; no prefill was measured on this machine",
        "gpu_tflops": H100_TFLOPS,
    }
    return decode, prefill, {"decode": comments, "prefill": {"gpu_tflops": "H100 SXM5 datasheet"}}


def _sandbox_rates(catalog: Catalog) -> tuple[HardwareProfile, dict[str, dict[str, float]]]:
    sandbox = catalog.hardware(SANDBOX)
    rates = {engine: dict(types) for engine, types in sandbox.decode.thread_gbs.items()}
    ik = rates.setdefault("ik_llama.cpp", {})
    if IQ4_KSS_LIKE in ik:
        ik["iq4_kss"] = ik[IQ4_KSS_LIKE]
    return sandbox, rates


def epyc_tables(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """[decode] and [prefill] of the seeds' machine (one RTX PRO 6000; the two-GPU profile is
    the same host and GPU model, so it gets the same constants)."""
    name = EPYC[0]
    hardware = catalog.hardware(name)
    h100 = fit_h100(H100_TABLE, catalog.hardware(H100))
    sandbox, rates = _sandbox_rates(catalog)
    base = Decode(
        gpu_read_efficiency=h100.constants["gpu_read_efficiency"],
        split_us=h100.constants["split_us"],
        cpu_node_us=h100.constants["cpu_node_us"],
        link_gbs=PCIE5_X16_GBS,
        host_read_efficiency=HOST_READ_EFFICIENCY,
        cpu_clock_ghz=EPYC_CLOCK_GHZ,
        thread_gbs=rates,
        default_thread_gbs=sandbox.decode.default_thread_gbs,
        error_fraction=error_fraction(h100.errors),
    )
    seeded = hardware.model_copy(update={"decode": base})
    fitted = fit_seed_machine(lambda n: catalog.load(n, name), seeded).constants
    decode: dict[str, Any] = {
        "source": "python -m benchmarks.fit_speed: H100 runs, sandbox calibration, spec "
        "sheets; gpu_node_us and thread_scale fitted on seeds 002 (all-GPU) and 003",
        "gpu_read_efficiency": _round(base.gpu_read_efficiency),
        "gpu_node_us": _round(fitted["gpu_node_us"]),
        "split_us": _round(base.split_us),
        "link_gbs": base.link_gbs,
        "host_read_efficiency": base.host_read_efficiency,
        "cpu_node_us": _round(base.cpu_node_us),
        "cpu_clock_ghz": base.cpu_clock_ghz,
        "thread_scale": _round(fitted[THREAD_SCALE]),
        "default_thread_gbs": base.default_thread_gbs,
        "error_fraction": base.error_fraction,
        "thread_gbs": rates,
    }
    comments: dict[str, str] = {
        "gpu_read_efficiency": "measured: the H100 runs' fit (same llama.cpp CUDA kernels)",
        "gpu_node_us": "fitted on seed 002 all-GPU (85.36 tok/s)",
        "split_us": "measured: the H100 runs' fit",
        "link_gbs": "PCIe 5.0 x16: 64 GB/s per direction, ~50 in pinned copies",
        "host_read_efficiency": "assumed; 13-16 threads stay below it",
        "cpu_node_us": "measured: the H100 runs' fit (a 16-thread server host)",
        "cpu_clock_ghz": "AMD EPYC 9175F max boost (unfused Gated DeltaNet cycles)",
        "thread_scale": "fitted on seed 003 (--cpu-moe, mean 22.5 tok/s): these cores "
        "against the sandbox's",
        "default_thread_gbs": "the sandbox's (orch calibrate)",
        "error_fraction": "the H100 fit's largest leave-one-out error, rounded up",
    }
    for engine, types in rates.items():
        for type_name in types:
            note = "orch calibrate on the sandbox (small-cpu.toml), 1 thread"
            if engine == "ik_llama.cpp" and type_name == "iq4_kss":
                note = "ik's iq4_nl rate: AVX-512 unpacks IQ4_KSS as fast (ik PR #89)"
            comments[f"thread_gbs.{engine}.{type_name}"] = note
    prefill = {
        "source": "spec sheets; per-thread rates of the sandbox (orch calibrate)",
        "gpu_tflops": RTX_PRO_6000_MAXQ_TFLOPS,
        "thread_gflops": {e: dict(t) for e, t in sandbox.prefill.thread_gflops.items()},
    }
    prefill_comments = {
        "gpu_tflops": "RTX PRO 6000 Blackwell Max-Q datasheet, dense FP16",
        **{
            f"thread_gflops.{e}.{t}": "sandbox Zen 4 core, AVX2 build: a lower bound for a "
            "Zen 5 core with AVX-512"
            for e, types in sandbox.prefill.thread_gflops.items()
            for t in types
        },
    }
    return decode, prefill, {"decode": comments, "prefill": prefill_comments}


HEADER = [
    "Speed constants (orchestrator.speed), regenerated by `python -m benchmarks.fit_speed`",
    'from the sources named after each value; README "The speed model" explains them.',
]


def regenerate(catalog: Catalog) -> dict[Path, str]:
    """The new text of every profile this script owns."""
    out: dict[Path, str] = {}
    jobs = [(H100, h100_tables)] + [(n, epyc_tables) for n in EPYC]
    for name, tables in jobs:
        path = Path(catalog.source("hardware", name))
        text = path.read_text()
        decode, prefill, comments = tables(catalog)
        new = replace_tables(text, {"decode": decode, "prefill": prefill}, HEADER, comments)
        parse_hardware(new, str(path))
        tomllib.loads(new)
        out[path] = new
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if anything would change")
    args = parser.parse_args(argv)
    changed = []
    for path, text in regenerate(Catalog(PROFILES)).items():
        if path.read_text() != text:
            changed.append(path)
            if not args.check:
                path.write_text(text)
    for path in changed:
        print(f"{'would change' if args.check else 'wrote'} {path.relative_to(ROOT)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
