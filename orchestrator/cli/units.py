"""``orch systemd``, ``orch detect`` and ``orch new``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.app import App
from orchestrator.detect import detect_host, hardware_toml, profile_name
from orchestrator.errors import OrchError, PreflightError, ProfileError
from orchestrator.memory.gguf_file import GgufError
from orchestrator.memory.tensors import read_gguf, split_paths
from orchestrator.newprofile import check_name, pick_port, propose, taken_ports, write_files
from orchestrator.probe import missing_files, port_in_use
from orchestrator.settings import config_home
from orchestrator.systemd import install, unit_dir
from orchestrator.units import (
    UnitHost,
    render_serve_unit,
    render_unit,
    serve_unit_name,
    unit_name,
)

SYSTEMD_EPILOG = """\
examples:
  orch systemd demo                        print the unit for profile demo
  orch systemd demo --output orch-demo.service
  sudo orch systemd demo --install         /etc/systemd/system, daemon-reload, enable
  orch systemd demo --user --install       ~/.config/systemd/user, systemctl --user ...
  systemctl [--user] start orch-demo       then: journalctl -u orch-demo -f

  orch systemd --serve a b --port 8080    a unit for the gateway (orch serve a b)

The unit runs `orch up --foreground NAME` (Type=notify: READY after warm-up) with the
ORCH_* settings and PATH of the shell that generated it.
"""

DETECT_EPILOG = """\
examples:
  orch detect                              print this machine's hardware profile
  orch detect --name workstation --write   save it as profiles/hardware/workstation.toml
  orch plan --hardware workstation demo    plan a profile against it
"""

NEW_EPILOG = """\
examples:
  orch new my-model --from-gguf ~/models/Model-Q4_K_M.gguf --hardware small-cpu
  orch new my-model --from-gguf model-00001-of-00003.gguf --hardware epyc9175f-rtxpro6000
  orch plan my-model                       check it, then: orch up my-model

Writes profiles/architectures/NAME.toml and profiles/models/NAME.toml. The context is the
largest (up to the trained one) that orch's memory model says fits the hardware.
"""


def register(commands: Any) -> None:
    """Add the unit, detect and new sub-commands."""
    p = commands.add_parser(
        "systemd",
        help="print or install a systemd unit for a profile",
        description="Render a Type=notify systemd service for profile NAME.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SYSTEMD_EPILOG,
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="profile name (profiles/models/NAME.toml); with --serve, the profiles to serve",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="a unit for the gateway (`orch serve NAME...`; default: [serve].models)",
    )
    p.add_argument("--port", type=int, help="with --serve: the gateway's port")
    p.add_argument("--user", action="store_true", help="a unit for `systemctl --user`")
    p.add_argument("--install", action="store_true", help="write it, daemon-reload and enable")
    p.add_argument("--output", type=Path, metavar="FILE", help="write the unit to FILE")
    p.add_argument("--orch-path", metavar="PATH", help="the orch executable (default: this one)")
    p.set_defaults(handler=cmd_systemd)

    p = commands.add_parser(
        "detect",
        help="write a hardware profile for this machine",
        description="Detect CPU, RAM, NUMA nodes and NVIDIA GPUs and print a hardware profile.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=DETECT_EPILOG,
    )
    p.add_argument("--name", help="profile name (default: from the host name)")
    p.add_argument("--write", action="store_true", help="save under profiles/hardware/")
    p.add_argument("--force", action="store_true", help="overwrite an existing profile")
    p.set_defaults(handler=cmd_detect)

    p = commands.add_parser(
        "new",
        help="create a profile from a GGUF file",
        description="Create an architecture and a model profile from a GGUF header.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=NEW_EPILOG,
    )
    p.add_argument("name", metavar="NAME", help="name of the new profiles")
    p.add_argument("--from-gguf", required=True, type=Path, metavar="FILE", help="the model")
    p.add_argument("--hardware", help="hardware profile to fit (default: this host's, if saved)")
    p.add_argument("--force", action="store_true", help="overwrite existing profiles")
    p.set_defaults(handler=cmd_new)


# ---------------------------------------------------------------- systemd


def find_orch(explicit: str | None = None) -> str:
    """The absolute path of the orch executable the unit should run."""
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    else:
        argv0 = Path(sys.argv[0])
        if argv0.name == "orch":
            candidates.append(str(argv0))
        candidates.append(str(Path(sys.executable).parent / "orch"))
        found = shutil.which("orch")
        if found:
            candidates.append(found)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.absolute())
    raise PreflightError(
        f"cannot find the orch executable (tried {', '.join(candidates)}): pass --orch-path"
    )


def unit_environment(app: App) -> dict[str, str]:
    """What the service needs from this shell: orch's settings and PATH."""
    s = app.settings
    env = {}
    if s.profiles_dir is not None:
        env["ORCH_PROFILES_DIR"] = str(s.profiles_dir.expanduser().absolute())
    else:  # the same layers as this shell: its $XDG_CONFIG_HOME/orch, /etc/orch, shipped
        env["XDG_CONFIG_HOME"] = str(config_home().parent.expanduser().absolute())
    env |= {
        "ORCH_TEMPLATES_DIR": str(s.templates_dir.expanduser().absolute()),
        "ORCH_STATE_DIR": str(s.state_dir.expanduser().absolute()),
        "ORCH_PODMAN_BINARY": s.podman_binary,
        "ORCH_DEFAULT_BIND_HOST": s.default_bind_host,
    }
    path = os.environ.get("PATH")
    if path:
        env["PATH"] = path
    return env


def cmd_systemd(args: argparse.Namespace, app: App, console: Console) -> int:
    """Print, write or install the unit."""
    host = UnitHost(find_orch(args.orch_path), unit_environment(app), user=args.user)
    if args.serve:
        serve = app.settings.serve
        names = list(args.names) or list(serve.models)
        if not names:
            raise ProfileError(
                "orch systemd --serve", ["name the profiles to serve, or set [serve].models"]
            )
        for name in names:
            app.resolve(name)
        pinned = [app.plan(n, read_header=True) for n in serve.pinned if n in names]
        text = render_serve_unit(
            names,
            pinned,
            host,
            app.templates,
            port=args.port or serve.port,
            drain_grace_s=serve.drain_grace_s,
        )
        filename = serve_unit_name()
    else:
        if len(args.names) != 1:
            raise ProfileError("orch systemd", ["name one profile (or use --serve)"])
        plan = app.plan(args.names[0], read_header=True)
        text = render_unit(plan, host, app.templates)
        filename = unit_name(plan.name)
    if args.output:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise PreflightError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        console.print(f"wrote {args.output}", markup=False)
    if args.install:
        done = install(text, filename, user=args.user)
        console.print(f"wrote {done.path}", markup=False)
        for argv in done.commands:
            console.print(f"ran   {' '.join(argv)}", markup=False)
        scope = "--user " if args.user else ""
        console.print(f"start it with: systemctl {scope}start {filename}", markup=False)
    if not args.output and not args.install:
        console.print(text, markup=False, end="")
    return 0


# ---------------------------------------------------------------- detect


def cmd_detect(args: argparse.Namespace, app: App, console: Console) -> int:
    """Print or save this machine's hardware profile."""
    detected = detect_host()
    text = hardware_toml(detected)
    if not args.write:
        console.print(text, markup=False, end="")
        return 0
    name = args.name or profile_name(os.uname().nodename)
    try:
        check_name(name)
    except OrchError as exc:
        raise ProfileError("orch detect", [f"--name: {exc}"]) from None
    path = app.settings.own_profiles_dir / "hardware" / f"{name}.toml"
    write_files({path: text}, force=args.force)
    console.print(f"wrote {path}", markup=False)
    for note in detected.notes:
        console.print(f"  note: {note}", markup=False)
    return 0


# ---------------------------------------------------------------- new


def _default_hardware(app: App) -> str:
    available = app.catalog.names("hardware")
    guess = profile_name(os.uname().nodename)
    if guess in available:
        return guess
    raise ProfileError(
        "orch new",
        [
            f"--hardware: name the hardware to fit (available: {', '.join(available) or 'none'}),"
            " or save this machine's with `orch detect --write`"
        ],
    )


def cmd_new(args: argparse.Namespace, app: App, console: Console) -> int:
    """Create profiles from a GGUF header."""
    name: str = args.name
    check_name(name)
    gguf: Path = args.from_gguf.expanduser().absolute()
    missing = missing_files(split_paths(gguf))
    if missing:
        raise PreflightError(f"--from-gguf: {', '.join(map(str, missing))} not found")
    root = app.settings.own_profiles_dir
    arch_path = root / "architectures" / f"{name}.toml"
    model_path = root / "models" / f"{name}.toml"
    existing = [p for p in (arch_path, model_path) if p.exists()]
    if existing and not args.force:
        write_files({p: "" for p in existing}, force=False)  # raises the standard message
    hardware_name = args.hardware or _default_hardware(app)
    hardware = app.catalog.hardware(hardware_name, "orch new", "--hardware")
    try:
        header = read_gguf(gguf)
    except (OSError, ValueError) as exc:
        raise PreflightError(f"--from-gguf: {gguf} is not a readable GGUF file: {exc}") from None
    bind_host = app.settings.default_bind_host
    taken = set().union(*(taken_ports(folder / "models") for folder in app.catalog.roots))
    port = pick_port(taken, lambda p: port_in_use(bind_host, p))
    try:
        proposal = propose(
            name,
            header,
            gguf,
            hardware=hardware,
            hardware_name=hardware_name,
            templates=app.templates,
            port=port,
            source=str(model_path),
        )
    except GgufError as exc:
        raise PreflightError(f"--from-gguf: {exc.path}: cannot size this model: {exc}") from None
    written = write_files(
        {arch_path: proposal.architecture_toml, model_path: proposal.profile_toml},
        force=args.force,
    )
    for path in written:
        console.print(f"wrote {path}", markup=False)
    engine = proposal.plan.profile.engine
    ctx = getattr(engine, "ctx", 0)
    console.print(
        f"  {proposal.placement.what}; ctx {ctx}; port {proposal.plan.port}", markup=False
    )
    console.print(f"next: orch plan {name}", markup=False)
    return 0


__all__ = ["register", "unit_dir"]
