"""The ``orch`` command. The only place that prints or picks exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from orchestrator import __version__
from orchestrator.app import App
from orchestrator.cli.output import make_console
from orchestrator.errors import OrchError, PreflightError
from orchestrator.names import require_profile_name
from orchestrator.settings import load_settings

Handler = Callable[[argparse.Namespace, App, Console], int]

EPILOG = """\
examples:
  orch validate                        check every profile under profiles/
  orch plan --dry-run                  plan every profile against its declared hardware
  orch plan qwen35-397b-iq4            plan one profile, checking this machine's free memory
  orch plan --dry-run --json demo      the same plan as JSON, for scripts
  orch estimate model.gguf -- -c 32768 -ngl 99 --cpu-moe
  orch up demo && orch status demo && orch down demo

NAME is a profile name: 1-64 characters from a-z 0-9 . _ -, starting with a letter or digit.

where orch looks:
  orch.toml   $ORCH_CONFIG, else ./orch.toml, $XDG_CONFIG_HOME/orch/orch.toml, /etc/orch/orch.toml
  profiles    $ORCH_PROFILES_DIR alone, else $XDG_CONFIG_HOME/orch/profiles, then
              /etc/orch/profiles, then the shipped ones (first match per kind and name wins)

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
    for module_name in ("lifecycle", "bench", "serve", "units", "calibrate"):
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
        check_names(args)
        app = App(load_settings())
        return handler(args, app, console)
    except OrchError as exc:
        errors.print(f"orch: error: {exc}", markup=False)
        return exc.exit_code
    except BrokenPipeError:
        # the reader went away (`orch plan | head`): stop quietly, and keep the final flush
        # of the closed pipe from failing
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # the environment, not orch: a folder that is a file, a read-only or vanished path
        where = f"{exc.filename}: " if exc.filename else ""
        errors.print(f"orch: error: {where}{exc.strerror or exc}", markup=False)
        return PreflightError.exit_code
    except KeyboardInterrupt:
        errors.print("orch: interrupted", markup=False)
        return 130


def check_names(args: argparse.Namespace) -> None:
    """Every profile name on the command line, before anything touches the disk.

    A NAME becomes a path (``profiles/models/NAME.toml``, ``STATE/run/NAME.json``), a
    container and a unit name, so one that is not a profile name is refused here (exit 2).
    """
    where = f"orch {args.command}"
    for attr, what in (("name", "NAME"), ("names", "NAME"), ("hardware", "--hardware")):
        value = getattr(args, attr, None)
        for name in [value] if isinstance(value, str) else value or []:
            if attr == "name" and args.command == "detect":
                what = "--name"
            if attr == "hardware" and args.command == "calibrate":
                what = "HARDWARE"  # a positional there
            require_profile_name(name, where, what)


if __name__ == "__main__":
    sys.exit(main())
