"""``orch validate``, ``orch plan`` and ``orch estimate``."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from orchestrator.app import App, live_problems
from orchestrator.autoplace import AutoPlacement, as_auto
from orchestrator.cli.output import make_console
from orchestrator.cli.tables import plain_table, print_memory, print_table
from orchestrator.engines import LLAMA_SERVERS, adapter_for
from orchestrator.errors import BudgetError, OrchError, PreflightError, ProfileError
from orchestrator.flagcatalogue import FlagCatalogue
from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.memory.gguf_arch import architecture_from_gguf
from orchestrator.memory.gguf_file import GgufError
from orchestrator.memory.llama import CPU, REPACK_AVX2, estimate_llama, place
from orchestrator.memory.tensors import read_gguf
from orchestrator.plan import Plan, budgets, require_fit
from orchestrator.probe import HostState, probe_host
from orchestrator.speed import (
    SpeedEstimate,
    engine_run,
    llama_workload,
    predict,
    threads_from_args,
)

if TYPE_CHECKING:
    from orchestrator.instances import MemoryInUse
    from orchestrator.runtime import Handle
    from orchestrator.state import Record


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


def _print_speed(console: Console, speed: SpeedEstimate) -> None:
    columns = ("phase", "tok/s", "range", f"at {speed.ctx:,} ctx")
    table = plain_table("speed (predicted)", columns)
    (d_low, d_high), (p_low, p_high) = speed.decode_range, speed.prefill_range
    rows = [
        [
            "decode",
            f"{speed.decode_tps:.1f}",
            f"{d_low:.1f}-{d_high:.1f}",
            f"{speed.decode_tps_at_ctx:.1f}",
        ],
        ["prefill", f"{speed.prefill_tps:.0f}", f"{p_low:.0f}-{p_high:.0f}", "-"],
    ]
    for row in rows:
        table.add_row(*row)
    print_table(console, table, rows)
    parts = []
    for device, spent in speed.breakdown.items():
        ms = sum(spent.values()) * 1e3
        if ms >= 0.05:
            parts.append(f"{device} {ms:.1f} ms")
    if parts:
        console.print(f"  decode time per token: {', '.join(parts)}", markup=False)
    console.print("  prefill: a 2048-token prompt", markup=False)


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


def _print_plan(
    console: Console, plan: Plan, problems: list[str], notes: list[str] | None = None
) -> None:
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
    if plan.weights is not None:
        where = plan.weights.path if plan.weights.cached else "not in the cache (see below)"
        console.print(f"  {plan.weights.label()}: {where}", markup=False)
    listen = f"  listens on {plan.listen}"
    console.print(f"[bold red]{escape(listen)}[/bold red]" if plan.exposed else escape(listen))
    console.print()
    console.print(plan.display(), markup=False)
    console.print()
    print_memory(console, "memory", plan.memory, plan.budget)
    for note in plan.memory.notes:
        console.print(f"  note: {note}", markup=False)
    if plan.speed is not None:
        _print_speed(console, plan.speed)
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
    for note in notes or []:
        console.print(f"  note: {note}", markup=False)
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
    stack = contextlib.ExitStack()  # a podman connection, if a running instance needs one
    with stack:
        for name in names:
            code, plan = _plan_one(args, app, console, name, host, stack, results)
            worst = max(worst, code)
    if args.json:
        console.print_json(json.dumps(results if len(results) != 1 else results[0]))
    if worst == BudgetError.exit_code and len(names) == 1:
        require_fit(plan)  # one profile: say why on stderr too, with the suggestions
    return worst


def _plan_one(
    args: argparse.Namespace,
    app: App,
    console: Console,
    name: str,
    host: HostState | None,
    stack: contextlib.ExitStack,
    results: list[dict[str, Any]],
) -> tuple[int, Plan]:
    """Plan ``name``, print it (or add its JSON to ``results``); its exit code and plan."""
    worst = 0
    resolved = app.resolve(name, args.hardware)
    if args.placement == "auto":
        if not adapter_for(resolved.profile.engine).places_layers:
            make_console(stderr=True).print(
                f"note: {name}: --placement auto applies to llama.cpp engines; vLLM places "
                "by tensor_parallel_size, so this plan is unchanged",
                markup=False,
            )
        resolved = as_auto(resolved)
    plan = app.plan_for(resolved, read_header=not args.dry_run)
    problems: list[str] = []
    notes: list[str] = []
    running: dict[str, Any] | None = None
    if host is not None:
        own = _own_instance(app, name, stack)
        own_port = None
        if own is not None:
            record, handle, in_use = own
            own_port = record.port
            host = _freed(host, in_use)  # replacing it would free what it holds
            running = {
                "what": handle.describe(),
                "endpoint": record.endpoint,
                "plan_hash": record.plan_hash,
                "plan_matches": record.plan_hash == plan.plan_hash,
                "started_by": "orch serve" if record.gateway_pid else "orch up",
            }
            notes.append(_running_note(plan, running))
        problems = live_problems(plan, resolved, host, own_port=own_port)
    if not plan.fits:
        worst = max(worst, BudgetError.exit_code)
    if problems:
        worst = max(worst, PreflightError.exit_code)
    if args.json:
        data = plan.to_json()
        data["live_problems"] = problems
        data["dry_run"] = bool(args.dry_run)
        if not args.dry_run:
            data["running"] = running
        results.append(data)
    else:
        _print_plan(console, plan, problems, notes)
    return worst, plan


def _own_instance(
    app: App, name: str, stack: contextlib.ExitStack
) -> tuple[Record, Handle, MemoryInUse] | None:
    """This profile's running instance (one orch provably started) and what it holds."""
    from orchestrator import instances
    from orchestrator.lifecycle import Lifecycle
    from orchestrator.state import StateStore

    life = Lifecycle(
        app, StateStore(app.settings.state_dir), instances.Runtimes(app.settings, stack)
    )
    found = life.running(name)
    if found is None:
        return None
    record, handle = found
    return record, handle, instances.memory_in_use(handle.pids())


def _freed(host: HostState, in_use: MemoryInUse) -> HostState:
    gpus = tuple(
        replace(g, free_mib=g.free_mib + in_use.gpu_bytes.get(g.index, 0) // MIB) for g in host.gpus
    )
    return replace(host, ram_available_bytes=host.ram_available_bytes + in_use.rss_bytes, gpus=gpus)


def _running_note(plan: Plan, running: dict[str, Any]) -> str:
    where = f"{plan.name} is running ({running['what']}, started by {running['started_by']}) at "
    where += running["endpoint"]
    if running["plan_matches"]:
        return (
            f"{where} with this plan ({plan.plan_hash}): `orch up {plan.name}` leaves it as it is; "
            "its port and memory count as available here"
        )
    return (
        f"{where} with a different plan ({running['plan_hash']}; this one is {plan.plan_hash}): "
        f"`orch up --replace {plan.name}` restarts it with this one; its port and memory count "
        "as available here"
    )


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
    plan_budget = budgets(memory, hardware) if hardware else ()
    fit_note = _fit_note(server_args, adapter.catalogue)
    notes = [*memory.notes, *([fit_note] if fit_note else [])]
    unused = gpu_flags(server_args, adapter.catalogue) if hardware is None else []
    if unused:
        notes.insert(
            0,
            f"no GPU assumed (no --hardware): {', '.join(unused)} had no effect, everything "
            "is counted on the CPU; pass --hardware NAME to use its GPUs",
        )
    if args.json:
        data = memory.to_json()
        data["notes"] = notes
        data["budget"] = [
            {"device": b.device, "need": b.need, "capacity": b.capacity, "fits": b.fits}
            for b in plan_budget
        ]
        data["speed"] = speed.to_json() if speed else None
        console.print_json(json.dumps(data))
    else:
        types: dict[str, int] = {}
        for tensor in header.tensors:
            types[tensor.type_name] = types.get(tensor.type_name, 0) + 1
        console.print(
            f"{path}: {arch.gguf_arch}, {arch.n_layer} blocks, {len(header.tensors)} tensors "
            f"in {len(header.files)} file(s), {sum(t.nbytes for t in header.tensors):,} bytes "
            f"of weights ({', '.join(f'{n} {t}' for t, n in sorted(types.items()))})",
            markup=False,
        )
        print_memory(console, "estimate", memory, plan_budget)
        for note in notes:
            console.print(f"  note: {note}", markup=False)
        if speed is not None:
            _print_speed(console, speed)
        else:
            console.print("  note: pass --hardware for a speed estimate", markup=False)
    over = [b for b in plan_budget if not b.fits]
    if over:
        raise BudgetError(
            f"{path}: does not fit hardware {args.hardware}:\n  "
            + "\n  ".join(
                f"{b.device}: needs {b.need / GIB:.2f} GiB, budget {b.capacity / GIB:.2f} GiB "
                f"(over by {b.over_by / GIB:.2f} GiB)"
                for b in over
            )
        )
    return 0


GPU_FLAGS = (
    "--n-gpu-layers",
    "--tensor-split",
    "--main-gpu",
    "--split-mode",
    "--device",
    "--cpu-moe",
    "--n-cpu-moe",
)
"""llama-server flags that only mean something with a GPU (any spelling of each)."""


def gpu_flags(server_args: list[str], catalogue: FlagCatalogue) -> list[str]:
    """The GPU flags in a llama-server command line, as written.

    (An ``-ot`` rule naming a GPU is refused without ``--hardware``, by the argument parser.)
    """
    wanted = {catalogue.canonical(flag) for flag in GPU_FLAGS}
    ngl = catalogue.canonical("--n-gpu-layers")
    found = []
    for i, arg in enumerate(server_args):
        name, _, inline = arg.partition("=")
        flag = catalogue.canonical(name)
        value = inline or (server_args[i + 1] if i + 1 < len(server_args) else "")
        if flag in wanted and not (flag == ngl and value == "0"):
            found.append(name)
    return list(dict.fromkeys(found))
