"""``orch up``, ``down``, ``status``, ``logs``, ``ps`` and ``bench``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from orchestrator import health, instances, warmup
from orchestrator.app import App
from orchestrator.cli.output import make_console
from orchestrator.errors import LaunchError, NotRunningError, PreflightError
from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.notify import Notifier
from orchestrator.plan import Plan, require_fit
from orchestrator.probe import port_in_use
from orchestrator.profiles.schema import LlamaEngine, PodmanRuntime, VllmEngine
from orchestrator.runtime import STOP_GRACE_S, Handle
from orchestrator.runtime import podman as podman_rt
from orchestrator.runtime import process as process_rt
from orchestrator.state import Record, StateStore
from orchestrator.textsafe import StreamEscaper, escape_controls

SIGTERM_EXIT = 128 + signal.SIGTERM


class Terminated(Exception):
    """SIGTERM arrived (raised from the signal handler in the main thread)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(commands: Any) -> None:
    """Add the lifecycle sub-commands."""
    p = commands.add_parser(
        "up",
        help="start a profile, wait until ready, warm it up",
        description=(
            "Plan (reading the GGUF header), check the budget and this machine, launch,\n"
            "wait for /health, send the warm-up requests, and print the endpoint, the\n"
            "measured speed and the memory in use next to the plan's prediction."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  orch up demo\n  orch up demo --replace --timeout 60\n"
        "  orch up demo --foreground    (as a systemd Type=notify service)",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--replace",
        action="store_true",
        help="stop a running instance that differs, and instances it cannot share a GPU with "
        "(needs_whole_gpu)",
    )
    p.add_argument("--foreground", action="store_true", help="stay and supervise until SIGTERM")
    p.add_argument("--timeout", type=float, help="seconds to wait for ready (default: the plan's)")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up requests")
    p.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="skip the free RAM/VRAM check on this machine, saying so (files, port, engine "
        "flags and secrets are still checked)",
    )
    p.set_defaults(handler=cmd_up)

    p = commands.add_parser("down", help="stop a profile (or --all)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="stop every instance orch started")
    p.add_argument("--grace", type=float, default=STOP_GRACE_S, help="SIGTERM→SIGKILL seconds")
    p.set_defaults(handler=cmd_down)

    p = commands.add_parser("status", help="state, uptime and live figures of instances")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_status)

    p = commands.add_parser("ps", help="list the instances orch started")
    p.set_defaults(handler=cmd_ps)

    p = commands.add_parser("logs", help="an instance's engine output")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="then print new output as it comes, until the engine stops or Ctrl-C/SIGTERM",
    )
    p.add_argument("-n", "--lines", type=int, default=50, help="lines of history (default 50)")
    p.set_defaults(handler=cmd_logs)

    p = commands.add_parser(
        "bench",
        help="prefill and generation speed of a running instance",
        epilog="example:\n  orch bench demo --runs 3 --prompt-tokens 128,512",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--runs", type=int, default=3, help="requests per prompt size (default 3)")
    p.add_argument(
        "--prompt-tokens", default="128,512", help="comma-separated prompt sizes (default 128,512)"
    )
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate per request")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_bench)


# ---------------------------------------------------------------- helpers


def _store(app: App) -> StateStore:
    return StateStore(app.settings.state_dir)


def _err(text: str) -> None:
    make_console(stderr=True).print(text, markup=False)


def _pid_alive(pid: int | None) -> bool:
    if not pid or pid == os.getpid():
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def _gpu_holders(store: StateStore, runtimes: instances.Runtimes, plan: Plan) -> list[Record]:
    """Running instances that share a GPU with ``plan`` where either wants it whole."""
    mine = set(instances.gpu_indices(plan))
    if not mine:
        return []
    out = []
    for record in store.all():
        if record.name == plan.name or not mine & set(record.gpus):
            continue
        if not (plan.profile.needs_whole_gpu or record.needs_whole_gpu):
            continue
        if runtimes.attach(record).alive():
            out.append(record)
    return out


def _holders_message(plan: Plan, holders: list[Record]) -> str:
    """Why ``plan`` cannot start next to ``holders``, naming each one and the way out."""
    mine = set(instances.gpu_indices(plan))
    shared = sorted({g for h in holders for g in h.gpus if g in mine})
    names = " ".join(h.name for h in holders)
    if plan.profile.needs_whole_gpu:
        users = ", ".join(h.name for h in holders)
        why = f"{plan.name} needs the whole GPU (needs_whole_gpu) and it is in use by {users}"
    else:
        whole = ", ".join(h.name for h in holders if h.needs_whole_gpu)
        why = f"{whole} holds it whole (needs_whole_gpu)"
    return (
        f"{plan.name}: cannot start on GPU {', '.join(map(str, shared))}: {why}; "
        f"stop it with `orch down {names}`, or pass --replace to stop it and start {plan.name}"
    )


def _stop_record(
    store: StateStore, runtimes: instances.Runtimes, record: Record, grace: float
) -> float:
    """Stop what a record describes (via its supervisor if one runs); seconds taken."""
    start = time.monotonic()
    if _pid_alive(record.supervisor_pid):
        assert record.supervisor_pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + 5
        while _pid_alive(record.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    handle = runtimes.attach(record)
    if isinstance(handle, podman_rt.ContainerHandle):
        handle.save_logs(Path(record.log_path))
    handle.stop(grace)
    store.remove(record.name)
    return time.monotonic() - start


# ---------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace, app: App, console: Console) -> int:
    """Start one profile and wait until it is ready and warm."""
    name: str = args.name
    store = _store(app)
    resolved = app.resolve(name)
    plan = app.plan_for(resolved, read_header=True)
    require_fit(plan)
    timeout = args.timeout or plan.load_timeout_s
    notifier = Notifier.from_env()
    key = instances.api_key(plan.profile, os.environ)
    with contextlib.ExitStack() as stack:
        runtimes = instances.Runtimes(app.settings, stack)
        with _sigterm_raises():
            try:
                outcome = _up_locked(
                    args, app, console, store, runtimes, plan, resolved, timeout, notifier, key
                )
            except Terminated:
                _err(f"orch: {name}: SIGTERM: stopped what was started")
                return SIGTERM_EXIT
            except KeyboardInterrupt:
                _err(f"orch: {name}: interrupted: stopped what was started")
                return 130
            if outcome is None:
                return 0
            handle = outcome
            notifier.ready()
            if not args.foreground:
                return 0
            return _supervise(console, store, plan, handle, notifier)
    return 0


def _up_locked(
    args: argparse.Namespace,
    app: App,
    console: Console,
    store: StateStore,
    runtimes: instances.Runtimes,
    plan: Plan,
    resolved: Any,
    timeout: float,
    notifier: Notifier,
    key: str | None,
) -> Handle | None:
    name = plan.name
    with store.lock(name):
        existing = store.load(name)
        holders = _gpu_holders(store, runtimes, plan)  # never this profile's own record
        if args.replace:
            # what can be checked while the instances to replace still run, before any stops
            instances.preflight(plan, resolved, app.settings, check_resources=False)
            stopping = ([existing] if existing else []) + holders
            if port_in_use(plan.host, plan.port) and plan.port not in {r.port for r in stopping}:
                raise PreflightError(
                    f"{name}: cannot start here:\n  port {plan.host}:{plan.port} is already in "
                    f"use by something --replace would not stop (publish.port in {plan.source})"
                )
        if existing is not None:
            old = runtimes.attach(existing)
            if old.alive():
                if existing.plan_hash == plan.plan_hash and not args.replace:
                    console.print(
                        f"{name}: already running ({old.describe()}, plan {plan.plan_hash}) "
                        f"at {existing.endpoint}",
                        markup=False,
                    )
                    return None
                if not args.replace:
                    raise PreflightError(
                        f"{name}: running with a different plan ({existing.plan_hash}, now "
                        f"{plan.plan_hash}); pass --replace to restart it"
                    )
                console.print(f"{name}: stopping {old.describe()} to replace it", markup=False)
            _stop_record(store, runtimes, existing, STOP_GRACE_S)
        if holders and not args.replace:
            raise PreflightError(_holders_message(plan, holders))
        for holder in holders:
            console.print(f"{name}: stopping {holder.name} (holds the GPU)", markup=False)
            _stop_record(store, runtimes, holder, STOP_GRACE_S)
        for note in instances.preflight(
            plan, resolved, app.settings, check_memory=not args.skip_memory_check
        ):
            console.print(f"  note: {note}", markup=False)
        handle: Handle | None = None
        log_path = store.log_path(name)
        try:
            notifier.status(f"{name}: launching")
            started = time.time()
            handle = instances.launch(
                plan,
                app.settings,
                runtimes,
                log_path,
                header=f"# orch up {name} at {time.ctime(started)}: {plan.display()}",
            )
            store.save(_record(plan, handle, log_path, started, args.foreground))
            console.print(
                f"{name}: started {handle.describe()}, waiting for {plan.endpoint}", markup=False
            )
            load_start = time.monotonic()
            engine = plan.profile.engine
            health.wait_ready(
                plan.endpoint,
                deadline_s=timeout,
                alive=handle.alive,
                log_tail=handle.log_tail,
                exit_code=handle.exit_code,
                path=plan.profile.health.path,
                served_name=instances.model_name(plan) if isinstance(engine, VllmEngine) else None,
                api_key=key,
                on_poll=lambda t, s: notifier.status(f"{name}: loading ({t:.0f} s, /health {s})"),
            )
            console.print(f"{name}: ready in {time.monotonic() - load_start:.2f} s", markup=False)
            stats: list[warmup.RequestStats] = []
            if not args.no_warmup and plan.profile.warmup.requests:
                notifier.status(f"{name}: warming up")
                stats = warmup.warm_up(
                    plan.endpoint,
                    plan.profile.warmup,
                    model=instances.model_name(plan),
                    api_key=key,
                    llama=isinstance(engine, LlamaEngine),
                )
        except BaseException:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            notifier.stopping()
            if handle is not None:
                if isinstance(handle, podman_rt.ContainerHandle):
                    handle.save_logs(log_path)
                handle.stop(STOP_GRACE_S)
            with contextlib.suppress(Exception):
                instances.stop_leftovers(runtimes, plan, STOP_GRACE_S)
            store.remove(name)
            signal.signal(signal.SIGTERM, _raise_terminated)
            raise
    _print_ready(console, plan, handle, stats)
    notifier.status(f"{name}: ready at {plan.endpoint}")
    return handle


def _record(plan: Plan, handle: Handle, log_path: Path, started: float, foreground: bool) -> Record:
    is_podman = isinstance(plan.profile.runtime, PodmanRuntime)
    pid = create_time = None
    container_id = container = None
    if isinstance(handle, process_rt.ProcessHandle):
        pid, create_time = handle.pid, handle.create_time
    if isinstance(handle, podman_rt.ContainerHandle):
        container_id, container = handle.id, handle.name
    return Record(
        name=plan.name,
        runtime="podman" if is_podman else "process",
        plan_hash=plan.plan_hash,
        endpoint=plan.endpoint,
        port=plan.port,
        started_at=started,
        log_path=str(log_path),
        pid=pid,
        pid_create_time=create_time,
        container_id=container_id,
        container_name=container,
        engine=plan.profile.engine.kind,
        gpus=instances.gpu_indices(plan),
        needs_whole_gpu=plan.profile.needs_whole_gpu,
        supervisor_pid=os.getpid() if foreground else None,
        predicted_bytes={d: m.total for d, m in plan.memory.devices.items()},
    )


def _print_ready(
    console: Console, plan: Plan, handle: Handle, stats: list[warmup.RequestStats]
) -> None:
    console.print(f"{plan.name}: ready at {plan.endpoint}", markup=False)
    for i, s in enumerate(stats, 1):
        console.print(
            f"  warm-up {i}: TTFT {s.ttft_s * 1000:.0f} ms, prompt {s.prompt_tps:.1f} tok/s "
            f"({s.prompt_tokens} tok), generation {s.gen_tps:.1f} tok/s "
            f"({s.completion_tokens} tok) [{s.source}]",
            markup=False,
        )
    used = instances.memory_in_use(handle.pids())
    predicted = plan.memory.devices
    cpu = predicted.get("CPU")
    console.print(
        f"  memory: RSS {_size(used.rss_bytes)} (plan: CPU {_size(cpu.total) if cpu else '-'})",
        markup=False,
    )
    for index, nbytes in sorted(used.gpu_bytes.items()):
        dev = predicted.get(f"CUDA{index}")
        console.print(
            f"  memory: CUDA{index} {_size(nbytes)} (plan: {_size(dev.total) if dev else '-'})",
            markup=False,
        )


def _supervise(
    console: Console, store: StateStore, plan: Plan, handle: Handle, notifier: Notifier
) -> int:
    """Stay in the foreground: watch /health, ping the watchdog, stop cleanly on SIGTERM."""
    interval = notifier.watchdog_interval_s()
    period = min(interval, 2.0) if interval else 2.0
    console.print(f"{plan.name}: supervising (SIGTERM or Ctrl-C stops it)", markup=False)
    with _sigterm_raises():
        try:
            while True:
                time.sleep(period)
                if not handle.alive():
                    store.remove(plan.name)
                    raise LaunchError(
                        health.explain(
                            f"{plan.name}: engine exited", handle.log_tail(health.SEARCH_LINES)
                        )
                    )
                status = health.probe(plan.endpoint, plan.profile.health.path)
                if status == 200:
                    if interval:
                        notifier.watchdog()
                else:
                    notifier.status(f"{plan.name}: unhealthy (/health {status or 'no answer'})")
        except (Terminated, KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            notifier.stopping()
            if isinstance(handle, podman_rt.ContainerHandle):
                handle.save_logs(store.log_path(plan.name))
            handle.stop(STOP_GRACE_S)
            store.remove(plan.name)
            console.print(f"{plan.name}: stopped", markup=False)
            return 0


# ---------------------------------------------------------------- down / status / ps / logs


def cmd_down(args: argparse.Namespace, app: App, console: Console) -> int:
    """Stop instances."""
    store = _store(app)
    names: list[str] = [r.name for r in store.all()] if args.all else list(args.names)
    if not names:
        if args.all:
            console.print("nothing running", markup=False)
            return 0
        raise NotRunningError("orch down: name a profile, or use --all")
    missing = []
    with contextlib.ExitStack() as stack:
        runtimes = instances.Runtimes(app.settings, stack)
        for name in names:
            with store.lock(name):
                record = store.load(name)
                if record is None:
                    missing.append(name)
                    continue
                handle = runtimes.attach(record)
                if not handle.alive():
                    why = _gone_reason(handle)
                    handle.stop(args.grace)
                    store.remove(name)
                    console.print(
                        f"{name}: was not running ({why}); cleared its record", markup=False
                    )
                    continue
                seconds = _stop_record(store, runtimes, record, args.grace)
                console.print(
                    f"{name}: stopped {handle.describe()} in {seconds:.2f} s", markup=False
                )
    if missing:
        raise NotRunningError(f"not running: {', '.join(missing)} (no record in {store.run_dir})")
    return 0


def _gone_reason(handle: Handle) -> str:
    if isinstance(handle, podman_rt.ContainerHandle):
        status = handle.status()
        if status == "gone":
            return f"{handle.describe()} was removed outside orch"
        return f"{handle.describe()} is {status}, exit code {handle.exit_code()}"
    return f"{handle.describe()} has exited"


def _state_of(runtimes: instances.Runtimes, record: Record, key: str | None) -> dict[str, Any]:
    handle = runtimes.attach(record)
    alive = handle.alive()
    row: dict[str, Any] = {
        "name": record.name,
        "runtime": record.runtime,
        "engine": record.engine,
        "state": "running" if alive else "not running",
        "detail": "" if alive else _gone_reason(handle),
        "pid": record.pid,
        "container": record.container_name,
        "container_id": record.container_id,
        "endpoint": record.endpoint,
        "port": record.port,
        "plan_hash": record.plan_hash,
        "started_at": record.started_at,
        "uptime_s": round(time.time() - record.started_at, 1) if alive else None,
        "log": record.log_path,
    }
    if alive:
        code = health.probe(record.endpoint)
        row["health"] = code
        if code != 200:
            row["state"] = "unhealthy" if code else "not answering"
        row["figures"] = instances.live_figures(record.endpoint, key)
        row["rss_bytes"] = instances.memory_in_use(handle.pids()).rss_bytes
    return row


def cmd_status(args: argparse.Namespace, app: App, console: Console) -> int:
    """State, uptime, pid/container, port and live figures."""
    store = _store(app)
    records = store.all()
    if args.name:
        records = [r for r in records if r.name == args.name]
        if not records:
            raise NotRunningError(f"{args.name} is not running (no record in {store.run_dir})")
    rows = []
    with contextlib.ExitStack() as stack:
        runtimes = instances.Runtimes(app.settings, stack)
        for record in records:
            key = None
            with contextlib.suppress(Exception):
                key = instances.api_key(app.resolve(record.name).profile, os.environ)
            rows.append(_state_of(runtimes, record, key))
    if args.json:
        console.print_json(json.dumps(rows if not args.name else rows[0]))
    elif not rows:
        console.print("nothing running", markup=False)
    for row in [] if args.json else rows:
        where = f"pid {row['pid']}" if row["pid"] else f"container {row['container']}"
        up = _uptime(row["uptime_s"]) if row["uptime_s"] is not None else "-"
        console.print(
            f"{row['name']}: {row['state']} · {row['engine']} via {row['runtime']} · {where} · "
            f"{row['endpoint']} · up {up}",
            markup=False,
        )
        if row["detail"]:
            console.print(f"  {row['detail']}", markup=False)
        figures = row.get("figures") or {}
        if figures:
            parts = [
                f"{k} {figures[k]:g}"
                for k in ("prompt_tokens_total", "tokens_predicted_total", "requests_processing")
                if k in figures
            ]
            if "slots_total" in figures:
                parts.append(f"slots {figures['slots_busy']}/{figures['slots_total']} busy")
            console.print("  " + ", ".join(parts), markup=False)
        if row.get("rss_bytes"):
            console.print(f"  RSS {_size(row['rss_bytes'])}", markup=False)
    bad = [r for r in rows if r["state"] == "not running"]
    return NotRunningError.exit_code if bad and args.name else 0


def cmd_ps(args: argparse.Namespace, app: App, console: Console) -> int:
    """One line per instance orch started."""
    store = _store(app)
    table = Table(title=None)
    for column in ("name", "runtime", "state", "pid/container", "port", "uptime"):
        table.add_column(column)
    with contextlib.ExitStack() as stack:
        runtimes = instances.Runtimes(app.settings, stack)
        for record in store.all():
            alive = runtimes.attach(record).alive()
            table.add_row(
                record.name,
                record.runtime,
                "running" if alive else "not running",
                str(record.pid) if record.pid else (record.container_name or "-"),
                str(record.port),
                _uptime(time.time() - record.started_at) if alive else "-",
            )
    console.print(table)
    return 0


def cmd_logs(args: argparse.Namespace, app: App, console: Console) -> int:
    """Print (and follow) an instance's output; Ctrl-C or SIGTERM ends following (exit 0)."""
    store = _store(app)
    lines = max(int(args.lines), 0)
    record = store.load(args.name)
    log_path = store.log_path(args.name)
    if record is None and not log_path.exists():
        raise NotRunningError(f"{args.name}: no record and no log at {log_path}")
    try:
        with _sigterm_raises(), contextlib.ExitStack() as stack:
            if record is None:
                _write_lines(process_rt.tail_file(log_path, lines) if lines else [])
                return 0
            handle = instances.Runtimes(app.settings, stack).attach(record)
            if isinstance(handle, podman_rt.ContainerHandle) and handle.exists():
                if args.follow:
                    for chunk in handle.follow(lines):
                        _write_chunk(chunk)
                else:
                    _write_lines(handle.log_tail(lines) if lines else [])
            elif args.follow:
                if not Path(record.log_path).is_file():
                    raise NotRunningError(f"{args.name}: its log {record.log_path} is gone")
                _follow_file(Path(record.log_path), lines, handle)
            else:
                _write_lines(process_rt.tail_file(Path(record.log_path), lines) if lines else [])
    except (Terminated, KeyboardInterrupt):
        pass  # the way to stop following; the podman service (if any) is closed by now
    except BrokenPipeError:
        # The reader went away (`orch logs NAME -f | head`): stop quietly, and keep the
        # interpreter's final flush from failing on the closed pipe.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _write_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(escape_controls(line) + "\n" for line in lines))
    sys.stdout.flush()


_LOG_ESCAPER = StreamEscaper()
"""Engine output may echo a GGUF's name or a prompt: no escape sequence reaches the terminal."""


def _write_chunk(chunk: bytes) -> None:
    sys.stdout.buffer.write(_LOG_ESCAPER.feed(chunk))
    sys.stdout.buffer.flush()


def _follow_file(path: Path, lines: int, handle: Handle) -> None:
    """The last ``lines`` lines, then whatever the engine appends, until it stops.

    History and new output come from one open file, so no line falls between them.
    """
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        fh.seek(max(end - 64 * 1024, 0))
        history = fh.read(end - fh.tell()).splitlines(keepends=True)
        _write_chunk(b"".join(history[-lines:] if lines else []))
        while True:
            chunk = fh.read()
            if chunk:
                _write_chunk(chunk)
            elif not handle.alive():
                _write_chunk(fh.read())  # what it wrote just before exiting
                return
            else:
                time.sleep(0.2)


# ---------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace, app: App, console: Console) -> int:
    """Prefill and generation tok/s of a running instance."""
    store = _store(app)
    record = store.load(args.name)
    if record is None:
        raise NotRunningError(f"{args.name} is not running (start it with `orch up {args.name}`)")
    plan = app.plan(args.name, read_header=False)
    try:
        sizes = [int(x) for x in str(args.prompt_tokens).split(",") if x.strip()]
    except ValueError:
        raise PreflightError(
            f"--prompt-tokens: {args.prompt_tokens!r} is not a list of integers"
        ) from None
    if health.probe(record.endpoint) != 200:
        raise NotRunningError(f"{args.name}: {record.endpoint}/health is not 200")
    rows = warmup.bench(
        record.endpoint,
        runs=args.runs,
        prompt_tokens=sizes,
        max_tokens=args.max_tokens,
        model=instances.model_name(plan),
        api_key=instances.api_key(plan.profile, os.environ),
        llama=isinstance(plan.profile.engine, LlamaEngine),
    )
    if args.json:
        console.print_json(json.dumps([r.to_json() for r in rows]))
        return 0
    table = Table(
        title=f"{args.name} · {args.runs} run(s) per size · {args.max_tokens} tokens generated"
    )
    for column in (
        "prompt tok",
        "prefill tok/s min/mean/max",
        "gen tok/s min/mean/max",
        "TTFT ms mean",
        "source",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r.measured_prompt_tokens}",
            f"{r.prefill_tps.min:.1f} / {r.prefill_tps.mean:.1f} / {r.prefill_tps.max:.1f}",
            f"{r.gen_tps.min:.1f} / {r.gen_tps.mean:.1f} / {r.gen_tps.max:.1f}",
            f"{r.ttft_s.mean * 1000:.0f}",
            r.source,
        )
    console.print(table)
    return 0
