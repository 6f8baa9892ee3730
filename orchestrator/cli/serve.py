"""``orch serve``: one OpenAI-compatible endpoint that starts, swaps and stops profiles."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from orchestrator.app import App
from orchestrator.errors import ProfileError
from orchestrator.notify import Notifier

SERVE_EPILOG = """\
examples:
  orch serve demo                        serve one profile on 127.0.0.1:8080
  orch serve a b c --port 9000           serve three; each starts on its first request
  orch serve                             the profiles of [serve].models in orch.toml
  curl localhost:8080/v1/chat/completions -d '{"model": "demo", "messages": [...]}'

Pages: / (status), /orch/status (JSON), /metrics (Prometheus),
POST /orch/load/NAME and /orch/unload/NAME.
"""


def register(commands: Any) -> None:
    """Add the serve sub-command."""
    p = commands.add_parser(
        "serve",
        help="one OpenAI-compatible endpoint that starts and swaps profiles on demand",
        description=(
            "Serve profiles behind one OpenAI-compatible endpoint. A profile starts on its\n"
            "first request when its plan fits next to what runs (per device, within the\n"
            "hardware budgets and the free memory); idle instances are stopped to make\n"
            "room, least recently used and lowest priority first."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SERVE_EPILOG,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="profiles (default: [serve].models)")
    p.add_argument("--host", help="address to listen on (default: [serve].host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: [serve].port, 8080)")
    p.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="admit by the hardware budgets only, not by this machine's free RAM/VRAM",
    )
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, app: App, console: Console) -> int:
    """Run the gateway until SIGTERM or Ctrl-C."""
    from orchestrator.gateway.service import ServeOptions, serve

    settings = app.settings.serve
    names = tuple(args.names) or settings.models
    if not names:
        raise ProfileError(
            "orch serve", ["name the profiles to serve, or list them in [serve].models"]
        )
    for name in names:
        app.resolve(name)  # unknown names fail here, with the available ones
    options = ServeOptions(
        names=names,
        host=args.host or settings.host,
        port=args.port or settings.port,
        check_memory=not args.skip_memory_check,
    )

    def report(line: str) -> None:
        console.print(f"orch serve: {line}", markup=False)

    serve(app, options, settings, report, Notifier.from_env())
    return 0
