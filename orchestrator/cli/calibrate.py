"""``orch calibrate``: measure a hardware profile's speed constants on this machine."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.app import App
from orchestrator.calibrate import DEFAULT_TYPES, calibrate_cpu, calibrate_gpu, write_profile
from orchestrator.cli.output import make_console
from orchestrator.errors import PreflightError, ProfileError
from orchestrator.ggml_types import GGML_TYPES
from orchestrator.probe import probe_gpus
from orchestrator.profiles.loader import parse_hardware

EPILOG = """\
examples:
  orch calibrate small-cpu --binary ~/.cache/orch/llama-server/11434.0.0-x86_64/llama-server
  orch calibrate small-cpu --types f16,q4_0 --budget 120
  orch calibrate workstation --engine ik_llama.cpp --binary /opt/ik/llama-server \\
      --quantize /opt/ik/llama-quantize --types iq4_kss,iq4_nl,q8_0
  orch calibrate small-cpu --dry-run                 measure and print, write nothing

Runs short probes with the real llama-server on synthetic models written to a temporary
folder (about 100-370 MB each, deleted after): per weight type a one-thread decode and prefill
(CPU time, so other load on the machine does not count), then the graph-node cost with all the
profile's cores, and with an NVIDIA GPU the GPU constants. Writes [decode] and [prefill] of
profiles/hardware/HARDWARE.toml (or --output) with tomli-w, under a comment naming the date
and the engine build; other tables and their comments stay as they are.
"""


def register(commands: Any) -> None:
    """Add ``orch calibrate``."""
    p = commands.add_parser(
        "calibrate",
        help="measure this machine's speed constants into a hardware profile",
        description="Measure decode/prefill speed constants with the real engine and write "
        "them into a hardware profile.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("hardware", metavar="HARDWARE", help="hardware profile to calibrate")
    p.add_argument("--binary", default="llama-server", help="llama-server to probe with")
    p.add_argument(
        "--engine",
        choices=["llama.cpp", "ik_llama.cpp"],
        default="llama.cpp",
        help="which engine the binary is (its rates are kept apart)",
    )
    p.add_argument(
        "--types",
        default=",".join(DEFAULT_TYPES),
        help=f"weight types to measure (default: {','.join(DEFAULT_TYPES)})",
    )
    p.add_argument(
        "--quantize",
        help="llama-quantize for types orch cannot write itself (ik_llama.cpp's iq4_kss, ...)",
    )
    p.add_argument(
        "--budget", type=float, default=600.0, help="stop starting probes after this many seconds"
    )
    p.add_argument("--output", type=Path, help="write this file instead of the profile")
    p.add_argument("--dry-run", action="store_true", help="measure and print; write nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_calibrate)


def _types(text: str) -> list[str]:
    out = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in out if t not in GGML_TYPES]
    if unknown:
        problem = f"--types: unknown ggml type(s) {', '.join(unknown)}"
        raise ProfileError("orch calibrate", [problem])
    if not out:
        raise ProfileError("orch calibrate", ["--types: name at least one weight type"])
    return out


def cmd_calibrate(args: argparse.Namespace, app: App, console: Console) -> int:
    """Run the probes, print what they measured, and write the constants."""
    catalog = app.catalog
    hardware = catalog.hardware(args.hardware, "orch calibrate", "HARDWARE")
    path = Path(catalog.source("hardware", args.hardware))
    types = _types(args.types)
    binary = shutil.which(args.binary) or args.binary
    if not Path(binary).is_file():
        raise PreflightError(
            f"{args.binary}: no such llama-server (pass --binary PATH; `make setup` builds one "
            "under ~/.cache/orch/llama-server/)"
        )
    err = make_console(stderr=True)

    def progress(message: str) -> None:
        err.print(f"calibrate: {message}", markup=False)

    with tempfile.TemporaryDirectory(prefix="orch-calibrate-") as tmp:
        result = calibrate_cpu(
            binary,
            args.engine,
            hardware,
            Path(tmp),
            types=types,
            quantize=args.quantize,
            budget_s=args.budget,
            progress=progress,
        )
        gpus, why = probe_gpus()
        if gpus:
            result.decode.update(calibrate_gpu(binary, args.engine, hardware, Path(tmp), progress))
        else:
            result.skipped.append(f"GPU constants: {why or 'no NVIDIA GPU'}")
    if args.json:
        console.print_json(
            data={
                "hardware": args.hardware,
                "engine": result.engine,
                "engine_version": result.engine_version,
                "measurements": [m.__dict__ for m in result.measurements],
                "decode": result.decode,
                "prefill": result.prefill,
                "skipped": result.skipped,
            }
        )
    else:
        console.print(f"{args.hardware}: {result.engine} {result.engine_version}", markup=False)
        for m in result.measurements:
            prefill = (
                f", prefill {m.prefill_cpu_s_per_token * 1e3:.2f} ms/token"
                if m.prefill_cpu_s_per_token
                else ""
            )
            console.print(
                f"  {m.probe:<7} {m.weight_type:<7} {m.threads} thread(s): "
                f"decode {m.decode_s_per_token * 1e3:.2f} ms/token{prefill}",
                markup=False,
            )
        console.print(f"  [decode] {result.decode}", markup=False)
        console.print(f"  [prefill] {result.prefill}", markup=False)
        for line in result.skipped:
            console.print(f"  skipped: {line}", markup=False)
    if not result.measurements:
        raise PreflightError("calibrate: no probe ran; nothing written")
    if args.dry_run:
        return 0
    target = args.output or path
    if args.output:
        shutil.copyfile(path, target)
    text = write_profile(target, result)
    parse_hardware(text, str(target))  # what was written must load
    if not args.json:
        console.print(f"wrote {target}", markup=False)
    return 0
