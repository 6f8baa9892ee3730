"""The ``orch`` command. The only place that prints or picks exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from rich.console import Console

from orchestrator import __version__
from orchestrator.app import App
from orchestrator.cli.output import make_console
from orchestrator.errors import OrchError
from orchestrator.settings import Settings, load_settings

Handler = Callable[[argparse.Namespace, App, Console], int]

EPILOG = """\
examples:
  orch validate                        check every profile under profiles/
  orch plan --dry-run                  plan every profile against its declared hardware
  orch plan qwen35-397b-iq4            plan one profile, checking this machine's free memory
  orch plan --dry-run --json demo      the same plan as JSON, for scripts
  orch estimate model.gguf -- -c 32768 -ngl 99 --cpu-moe
  orch up demo && orch status demo && orch down demo

environment:
  ORCH_PROFILES_DIR, ORCH_TEMPLATES_DIR, ORCH_STATE_DIR, ORCH_PODMAN_BINARY,
  ORCH_DEFAULT_BIND_HOST override orch.toml (ORCH_CONFIG names another file).
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-command per module."""
    from orchestrator.cli import core

    parser = argparse.ArgumentParser(
        prog="orch",
        description="Declarative, budget-checked launcher for llama.cpp, ik_llama.cpp and vLLM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    core.register(commands)
    for module_name in ("lifecycle", "units"):
        try:
            module = __import__(f"orchestrator.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"orchestrator.cli.{module_name}":
                raise
            continue
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn every OrchError into a message and exit code."""
    console = make_console()
    errors = make_console(stderr=True)
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in words:  # everything after -- belongs to the engine (orch estimate)
        cut = words.index("--")
        words, passthrough = words[:cut], words[cut + 1 :]
    args = parser.parse_args(words)
    args.passthrough = passthrough
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = _settings(errors)
        if settings is None:
            return 2
        return handler(args, App(settings), console)
    except OrchError as exc:
        errors.print(f"orch: error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("orch: interrupted", markup=False)
        return 130


def _settings(errors: Console) -> Settings | None:
    """The settings, or None after saying what is wrong with them."""
    try:
        return load_settings()
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        errors.print("orch: error: orch settings (orch.toml / ORCH_*):", markup=False)
        for line in lines:
            errors.print(f"  {line}", markup=False)
        return None


if __name__ == "__main__":
    sys.exit(main())
