"""``orch validate``, ``orch plan`` and ``orch estimate``."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.app import App, live_problems
from orchestrator.autoplace import AutoPlacement, as_auto
from orchestrator.cli.output import make_console
from orchestrator.errors import BudgetError, OrchError, PreflightError, ProfileError
from orchestrator.memory.breakdown import GIB, MIB, MemoryEstimate
from orchestrator.memory.gguf_arch import architecture_from_gguf, parse_llama_args
from orchestrator.memory.llama import CPU, REPACK_AVX2, estimate_llama
from orchestrator.memory.tensors import read_gguf
from orchestrator.plan import Plan, budgets, require_fit
from orchestrator.probe import probe_host
from orchestrator.profiles.schema import VllmEngine


def register(commands: Any) -> None:
    """Add the core sub-commands."""
    p = commands.add_parser(
        "validate",
        help="check every profile (schema, references, rendering)",
        description="Check every hardware, architecture and model profile. Exit 2 on any error.",
    )
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "plan",
        help="show the exact command and the memory budget per device",
        description=(
            "Plan profiles: the exact command orch will run and the memory each device needs.\n"
            "Live (default): also reads the GGUF header when present and checks this machine's\n"
            "free VRAM (pynvml), available RAM (psutil), the port and the model files.\n"
            "--dry-run: declared hardware only, no probing; no NAME plans every profile."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  orch plan --dry-run\n  orch plan --dry-run --json qwen35-397b-iq4\n"
        "  orch plan --dry-run --placement auto qwen35-397b-iq4-2gpu\n  orch plan demo",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="profile names (profiles/models/NAME.toml)"
    )
    p.add_argument("--dry-run", action="store_true", help="no host probing; declared hardware only")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--hardware", help="plan against another hardware profile")
    p.add_argument(
        "--placement",
        choices=["auto"],
        help="auto: let orch choose the layer/expert placement (llama.cpp profiles), "
        "showing the alternatives it considered",
    )
    p.set_defaults(handler=cmd_plan)

    p = commands.add_parser(
        "estimate",
        help="memory a raw llama-server command line will use, per device",
        description=(
            "Read MODEL.gguf's header (no tensor data) and predict, per device, the memory the\n"
            "llama-server arguments after -- will use: weights, KV cache, compute, overhead.\n"
            "usage: orch estimate MODEL.gguf [--hardware NAME] [--json] -- LLAMA-SERVER-ARGS"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  orch estimate model.gguf --hardware epyc9175f-rtxpro6000 -- "
        "-c 32768 -ngl 99 --cpu-moe",
    )
    p.add_argument("model", type=Path, metavar="MODEL.gguf")
    p.add_argument("--hardware", help="hardware profile giving the GPUs (default: CPU only)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_estimate)


# ---------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace, app: App, console: Console) -> int:
    """Validate all profiles; print one line per profile."""
    catalog = app.catalog
    failures = 0
    for kind in ("hardware", "architectures"):
        for name in catalog.names(kind):
            try:
                if kind == "hardware":
                    catalog.hardware(name)
                else:
                    catalog.architecture(name, catalog.source(kind, name))
                console.print(f"ok     {kind}/{name}", markup=False)
            except ProfileError as exc:
                failures += 1
                console.print(f"error  {exc}", markup=False)
    names = catalog.model_names()
    for name in names:
        try:
            app.plan(name, read_header=False)
            console.print(f"ok     models/{name}", markup=False)
        except OrchError as exc:
            failures += 1
            console.print(f"error  {exc}", markup=False)
    if not names:
        console.print(f"error  no model profiles under {catalog.root / 'models'}", markup=False)
        return 2
    console.print(f"{len(names)} model profile(s), {failures} error(s)", markup=False)
    return 2 if failures else 0


# ---------------------------------------------------------------- plan


def _memory_table(title: str, memory: MemoryEstimate, plan: Plan | None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("device", "weights", "kv", "compute", "overhead", "total", "budget", "fits"):
        table.add_column(column, justify="left" if column == "device" else "right")
    caps = {b.device: b for b in plan.budget} if plan else {}
    for device, mem in memory.devices.items():
        budget = caps.get(device)
        table.add_row(
            device,
            _gib(mem.weights),
            _gib(mem.kv),
            _gib(mem.compute),
            _gib(mem.overhead),
            _gib(mem.total),
            _gib(budget.capacity) if budget else "-",
            ("yes" if budget.fits else f"NO (+{budget.over_by / GIB:.2f})") if budget else "-",
        )
    return table


def _print_placement(console: Console, auto: AutoPlacement) -> None:
    console.print(
        "  placement auto: strategies considered (est. decode tok/s from the hardware's "
        "[decode] rates)",
        markup=False,
    )
    for c in auto.considered:
        gpu = sum(b.need for b in c.budget if b.device != CPU)
        host = sum(b.need for b in c.budget if b.device == CPU)
        mark = "->" if c is auto.chosen else "  "
        verdict = f"GPU {_gib(gpu)}, host {_gib(host)}" if c.fits else f"no: {c.why_not}"
        console.print(
            f"  {mark} {c.strategy:<12} {c.tokens_per_s:7.1f} tok/s  {verdict}\n"
            f"       {c.what}: {c.flags}",
            markup=False,
        )
    if auto.chosen is None:
        console.print("  none fits: see the suggestions below", markup=False)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def _print_plan(console: Console, plan: Plan, problems: list[str]) -> None:
    console.print(f"[bold]{plan.name}[/bold]  ({escape(plan.source)})")
    desc = plan.profile.description
    if desc:
        console.print(f"  {desc}", markup=False)
    console.print(
        f"  engine {plan.profile.engine.kind} · runtime {plan.profile.runtime.kind} · "
        f"hardware {plan.hardware_name} · endpoint {plan.endpoint}",
        markup=False,
    )
    console.print(f"  weights from {plan.weights_source}", markup=False)
    listen = f"  listens on {plan.listen}"
    console.print(f"[bold red]{escape(listen)}[/bold red]" if plan.exposed else escape(listen))
    console.print()
    console.print(plan.display(), markup=False)
    console.print()
    console.print(_memory_table("memory", plan.memory, plan))
    for note in plan.memory.notes:
        console.print(f"  note: {note}", markup=False)
    if plan.placement is not None:
        _print_placement(console, plan.placement)
    for warning in plan.warnings:
        console.print(f"  warning: {warning}", markup=False)
    if not plan.fits:
        console.print("  [bold red]does not fit[/bold red]")
        for suggestion in plan.suggestions:
            console.print(f"  would fit with: {suggestion}", markup=False)
    for problem in problems:
        console.print(f"  [red]cannot start here:[/red] {escape(problem)}")
    console.print()


def cmd_plan(args: argparse.Namespace, app: App, console: Console) -> int:
    """Plan one or more profiles."""
    names: list[str] = list(args.names)
    if not names:
        if not args.dry_run:
            raise ProfileError("orch plan", ["name a profile, or use --dry-run to plan them all"])
        names = app.catalog.model_names()
    host = None if args.dry_run else probe_host()
    results: list[dict[str, Any]] = []
    worst = 0
    for name in names:
        resolved = app.resolve(name, args.hardware)
        if args.placement == "auto":
            if isinstance(resolved.profile.engine, VllmEngine):
                make_console(stderr=True).print(
                    f"note: {name}: --placement auto applies to llama.cpp engines; vLLM places "
                    "by tensor_parallel_size, so this plan is unchanged",
                    markup=False,
                )
            resolved = as_auto(resolved)
        plan = app.plan_for(resolved, read_header=not args.dry_run)
        problems: list[str] = []
        if host is not None:
            problems = live_problems(plan, resolved, host)
        if not plan.fits:
            worst = max(worst, BudgetError.exit_code)
        if problems:
            worst = max(worst, PreflightError.exit_code)
        if args.json:
            data = plan.to_json()
            data["live_problems"] = problems
            data["dry_run"] = bool(args.dry_run)
            results.append(data)
        else:
            _print_plan(console, plan, problems)
    if args.json:
        console.print_json(json.dumps(results if len(results) != 1 else results[0]))
    if worst == BudgetError.exit_code and len(names) == 1:
        require_fit(plan)  # one profile: say why on stderr too, with the suggestions
    return worst


# ---------------------------------------------------------------- estimate


def cmd_estimate(args: argparse.Namespace, app: App, console: Console) -> int:
    """Predict a raw llama-server command line's memory."""
    server_args: list[str] = list(args.passthrough)
    path: Path = args.model
    if not path.is_file():
        raise PreflightError(f"{path}: no such model file")
    try:
        header = read_gguf(path)
    except (ValueError, OSError) as exc:
        raise PreflightError(f"{path}: not a readable GGUF file ({exc})") from None
    try:
        arch = architecture_from_gguf(header)
    except (TypeError, ValueError, KeyError, ArithmeticError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise PreflightError(
            f"{path}: the header's architecture facts are unusable: {reason}"
        ) from None
    gpus: tuple[str, ...] = ()
    vram: tuple[int, ...] = ()
    context_mib = 590
    hardware = None
    if args.hardware:
        hardware = app.catalog.hardware(args.hardware, "orch estimate", "--hardware")
        gpus = tuple(f"CUDA{g.index}" for g in hardware.gpus)
        vram = tuple(g.vram_mib for g in hardware.gpus)
        context_mib = hardware.budget.cuda_context_mib
    moe_layers = [i for i in range(arch.n_layer) if arch.is_moe_layer(i)]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    cfg = parse_llama_args(
        server_args,
        gpus=gpus,
        gpu_vram_mib=vram,
        cuda_context_mib=context_mib,
        moe_layers=moe_layers,
        # a CPU-only llama-server on x86-64 repacks some weight types into a second buffer
        repack_types=REPACK_AVX2 if x86 and not gpus else (),
    )
    memory = estimate_llama(arch, list(header.tensors), cfg)
    if args.json:
        console.print_json(json.dumps(memory.to_json()))
        return 0
    console.print(
        f"{path}: {arch.gguf_arch}, {arch.n_layer} blocks, {len(header.tensors)} tensors "
        f"in {len(header.files)} file(s)",
        markup=False,
    )
    plan_budget = budgets(memory, hardware) if hardware else ()
    table = _memory_table("estimate", memory, None)
    console.print(table)
    for b in plan_budget:
        if not b.fits:
            console.print(f"  {b.device}: over budget by {b.over_by / GIB:.2f} GiB", markup=False)
    for note in memory.notes:
        console.print(f"  note: {note}", markup=False)
    return 0
