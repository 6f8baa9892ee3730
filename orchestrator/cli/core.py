"""``orch validate``, ``orch plan`` and ``orch estimate``."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.app import App, live_problems
from orchestrator.autoplace import AutoPlacement, as_auto
from orchestrator.engines import LLAMA_SERVERS, adapter_for
from orchestrator.errors import BudgetError, OrchError, PreflightError, ProfileError
from orchestrator.flagcatalogue import FlagCatalogue
from orchestrator.memory.breakdown import GIB, MIB, MemoryEstimate
from orchestrator.memory.gguf_arch import architecture_from_gguf
from orchestrator.memory.gguf_file import GgufError
from orchestrator.memory.llama import CPU, REPACK_AVX2, estimate_llama, place
from orchestrator.memory.tensors import read_gguf
from orchestrator.plan import Plan, budgets, require_fit
from orchestrator.probe import probe_host
from orchestrator.speed import (
    SpeedEstimate,
    engine_run,
    llama_workload,
    predict,
    threads_from_args,
)


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
        help="memory and speed of a raw llama-server command line, per device",
        description=(
            "Read MODEL.gguf's header (no tensor data) and predict, per device, the memory the\n"
            "llama-server arguments after -- will use: weights, KV cache, compute, overhead;\n"
            "with --hardware, also its decode and prefill speed on that machine.\n"
            "Every flag llama-server takes is accepted, in any of its spellings.\n"
            "usage: orch estimate MODEL.gguf [--hardware NAME] [--engine ENGINE] [--json] "
            "-- LLAMA-SERVER-ARGS"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  orch estimate model.gguf --hardware epyc9175f-rtxpro6000 -- "
        "-c 32768 -ngl 99 --cpu-moe",
    )
    p.add_argument("model", type=Path, metavar="MODEL.gguf")
    p.add_argument("--hardware", help="hardware profile giving the GPUs (default: CPU only)")
    p.add_argument(
        "--engine",
        choices=sorted(LLAMA_SERVERS),
        default="llama.cpp",
        help="whose llama-server the arguments are for (its flags, its placement rules)",
    )
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


def _speed_table(speed: SpeedEstimate) -> Table:
    table = Table(title="speed (predicted)", title_justify="left")
    for column in ("", "tok/s", "range", f"at {speed.ctx:,} ctx", "time per token"):
        table.add_column(column, justify="left" if not column else "right")
    parts = []
    for device, spent in speed.breakdown.items():
        ms = sum(spent.values()) * 1e3
        if ms >= 0.05:
            parts.append(f"{device} {ms:.1f} ms")
    low, high = speed.decode_range
    table.add_row(
        "decode",
        f"{speed.decode_tps:.1f}",
        f"{low:.1f}-{high:.1f}",
        f"{speed.decode_tps_at_ctx:.1f}",
        ", ".join(parts),
    )
    low, high = speed.prefill_range
    table.add_row(
        "prefill", f"{speed.prefill_tps:.0f}", f"{low:.0f}-{high:.0f}", "", "2048-token prompt"
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
    console.print(f"[bold]{plan.name}[/bold]  ({plan.source})")
    desc = plan.profile.description
    if desc:
        console.print(f"  {desc}", markup=False)
    console.print(
        f"  engine {plan.profile.engine.kind} · runtime {plan.profile.runtime.kind} · "
        f"hardware {plan.hardware_name} · endpoint {plan.endpoint}",
        markup=False,
    )
    console.print(f"  weights from {plan.weights_source}", markup=False)
    if plan.weights is not None:
        where = plan.weights.path if plan.weights.cached else "not in the cache (see below)"
        console.print(f"  {plan.weights.label()}: {where}", markup=False)
    console.print()
    console.print(plan.display(), markup=False)
    console.print()
    console.print(_memory_table("memory", plan.memory, plan))
    for note in plan.memory.notes:
        console.print(f"  note: {note}", markup=False)
    if plan.speed is not None:
        console.print(_speed_table(plan.speed))
        for note in plan.speed.notes:
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
        console.print(f"  [red]cannot start here:[/red] {problem}")
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
            if not adapter_for(resolved.profile.engine).places_layers:
                Console(stderr=True).print(
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


def _fit_note(args: list[str], catalogue: FlagCatalogue) -> str:
    """A note when the arguments turn llama-server's ``--fit`` on: orch estimates them as written.

    (``--fit on`` may lower ``-c`` or ``-ngl`` at load time to fit the free memory.)
    """
    fit = catalogue.get("--fit")
    if fit is None:
        return ""
    for i, arg in enumerate(args):
        name, eq, inline = arg.partition("=")
        if catalogue.get(name) is not fit:
            continue
        if not fit.values:  # ik_llama.cpp's --fit is a switch
            return f"{name}: estimated as written (--fit may change -c / -ngl at load)"
        value = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
        if value != "off":
            return f"{name} {value}: estimated as written (--fit on may change -c / -ngl at load)"
    return ""


def cmd_estimate(args: argparse.Namespace, app: App, console: Console) -> int:
    """Predict a raw llama-server command line's memory (and, with --hardware, speed)."""
    server_args: list[str] = list(args.passthrough)
    adapter = LLAMA_SERVERS[args.engine]
    path: Path = args.model
    if not path.is_file():
        raise PreflightError(f"{path}: no such model file")
    try:
        header = read_gguf(path)
    except GgufError as exc:
        raise PreflightError(f"{exc.path}: not a readable GGUF file ({exc})") from None
    except OSError as exc:
        raise PreflightError(f"{path}: not a readable GGUF file ({exc})") from None
    try:
        arch = architecture_from_gguf(header)
    except GgufError as exc:
        raise PreflightError(f"{exc.path}: cannot size this model: {exc}") from None
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
    cfg = adapter.parse_args(
        server_args,
        gpus=gpus,
        gpu_vram_mib=vram,
        cuda_context_mib=context_mib,
        moe_layers=moe_layers,
        # a llama-server without a GPU (none here, or --device none) repacks some weight
        # types into a second buffer on x86-64; the model applies it only without GPUs
        repack_types=REPACK_AVX2 if x86 else (),
    )
    tensors = list(header.tensors)
    memory = estimate_llama(arch, tensors, cfg)
    speed = None
    if hardware is not None:
        threads, threads_batch = threads_from_args(server_args)
        run = engine_run(
            adapter.kind,
            "latest",
            hardware,
            threads=threads,
            threads_batch=threads_batch,
            batch=cfg.batch,
            ubatch=cfg.ubatch,
        )
        placed = place(tensors, arch.n_layer, cfg)
        work = llama_workload(arch, tensors, placed, cfg, adapter.kind, None)
        speed = predict(work, hardware, run, cfg.ctx or arch.ctx_train)
    fit_note = _fit_note(server_args, adapter.catalogue)
    notes = [*memory.notes, *([fit_note] if fit_note else [])]
    if args.json:
        data = memory.to_json()
        data["notes"] = notes
        data["speed"] = speed.to_json() if speed else None
        console.print_json(json.dumps(data))
        return 0
    types: dict[str, int] = {}
    for tensor in header.tensors:
        types[tensor.type_name] = types.get(tensor.type_name, 0) + 1
    console.print(
        f"{path}: {arch.gguf_arch}, {arch.n_layer} blocks, {len(header.tensors)} tensors "
        f"in {len(header.files)} file(s), {sum(t.nbytes for t in header.tensors):,} bytes of "
        f"weights ({', '.join(f'{n} {t}' for t, n in sorted(types.items()))})",
        markup=False,
    )
    plan_budget = budgets(memory, hardware) if hardware else ()
    table = _memory_table("estimate", memory, None)
    console.print(table)
    for b in plan_budget:
        if not b.fits:
            console.print(f"  {b.device}: over budget by {b.over_by / GIB:.2f} GiB", markup=False)
    for note in notes:
        console.print(f"  note: {note}", markup=False)
    if speed is not None:
        console.print(_speed_table(speed))
    else:
        console.print("  note: pass --hardware for a speed estimate", markup=False)
    return 0
