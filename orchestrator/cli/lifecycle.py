"""``orch up``, ``down``, ``status``, ``logs`` and ``ps``."""

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

from rich.console import Console

from orchestrator import instances
from orchestrator.app import App
from orchestrator.cli.output import make_console
from orchestrator.cli.tables import plain_table, print_table
from orchestrator.errors import NotRunningError, OrchError
from orchestrator.lifecycle import Event, Lifecycle, Started, UpOptions, comparable_memory
from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.notify import Notifier
from orchestrator.plan import Plan, require_fit
from orchestrator.progress import LoadProgress
from orchestrator.runtime import STOP_GRACE_S, Handle
from orchestrator.runtime import podman as podman_rt
from orchestrator.runtime import process as process_rt
from orchestrator.state import CorruptRecord, StateStore
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


@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt, whatever was inherited.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    across exec: without this, Ctrl-C (or a test's SIGINT) could not end ``orch logs -f``.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _sigterm_raises():
            yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


# ---------------------------------------------------------------- helpers


def _store(app: App) -> StateStore:
    return StateStore(app.settings.state_dir)


def _err(text: str) -> None:
    make_console(stderr=True).print(text, markup=False)


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


@contextlib.contextmanager
def _sigterm_ignored() -> Iterator[None]:
    """While a failed start is cleaned up, a second SIGTERM must not interrupt it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _raise_terminated)


def _amount(n: int) -> str:
    """Like ``_size``, with KiB below 1 MiB: a slow disk reads KiB/s, not "0 MiB/s"."""
    return f"{n / 1024:.0f} KiB" if 0 < n < MIB else _size(n)


def progress_text(p: LoadProgress) -> str:
    """``1.20/3.00 GiB (40%), 250 MiB/s, ETA 7 s``."""
    text = f"{_amount(p.loaded_bytes)}/{_amount(p.total_bytes)} ({p.fraction * 100:.0f}%)"
    if p.rate_bytes_s:
        text += f", {_amount(int(p.rate_bytes_s))}/s"
    if p.eta_s is not None and p.fraction < 1:
        text += f", ETA {_uptime(p.eta_s) if p.eta_s >= 60 else f'{p.eta_s:.0f} s'}"
    return text


EXTEND_TIMEOUT_S = 60.0
"""While weights are still being read, systemd's start timeout is pushed this far ahead."""


class UpView:
    """Shows ``orch up``'s events: lines, a live progress bar on a terminal, sd_notify.

    On a terminal the load progress is one line redrawn in place; otherwise a plain line
    every ``plain_every_s`` seconds, so logs and pipes get a readable record.
    """

    def __init__(
        self,
        console: Console,
        notifier: Notifier,
        *,
        live: bool | None = None,
        plain_every_s: float = 5.0,
    ) -> None:
        """Print to ``console``; ``live`` defaults to whether it is a terminal."""
        self.console = console
        self.notifier = notifier
        self.live = console.is_terminal if live is None else live
        self.plain_every_s = plain_every_s
        self._last_plain: float | None = None
        self._last_bytes = 0
        self._bar_shown = False

    def event(self, event: Event) -> None:
        """Handle one lifecycle event."""
        name = event.name
        if event.kind == "loading":
            self._loading(event)
            return
        self._end_bar()
        if event.kind == "note":
            self.console.print(f"  note: {event.message}", markup=False)
        elif event.kind == "launching":
            self.notifier.status(f"{name}: launching")
        elif event.kind == "warming":
            self.notifier.status(f"{name}: warming up")
        elif event.kind == "aborting":
            self.notifier.stopping()
        elif event.kind != "warm":
            self.console.print(f"{name}: {event.message}", markup=False)

    def _loading(self, event: Event) -> None:
        p = event.progress
        if p is None or p.total_bytes <= 0:
            self.notifier.status(f"{event.name}: {event.message}")
            return
        text = f"{event.name}: loading weights {progress_text(p)}"
        self.notifier.status(text)
        if p.loaded_bytes > self._last_bytes:
            self.notifier.extend_timeout(EXTEND_TIMEOUT_S)
        self._last_bytes = p.loaded_bytes
        if self.live:
            width = 24
            filled = round(p.fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            self.console.file.write(f"\r{event.name}: loading [{bar}] {progress_text(p)}\x1b[K")
            self.console.file.flush()
            self._bar_shown = True
        elif self._last_plain is None or p.elapsed_s - self._last_plain >= self.plain_every_s:
            self._last_plain = p.elapsed_s
            self.console.print(text, markup=False)

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.console.file.write("\n")
            self._bar_shown = False


# ---------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace, app: App, console: Console) -> int:
    """Start one profile and wait until it is ready and warm."""
    name: str = args.name
    store = _store(app)
    notifier = Notifier.from_env()
    view = UpView(console, notifier)
    options = UpOptions(
        replace=args.replace,
        timeout_s=args.timeout,
        warmup=not args.no_warmup,
        check_memory=not args.skip_memory_check,
        supervisor_pid=os.getpid() if args.foreground else None,
        shield=_sigterm_ignored,
    )
    with contextlib.ExitStack() as stack:
        runtimes = instances.Runtimes(app.settings, stack)
        life = Lifecycle(app, store, runtimes, view.event)
        # gpus = "any": the GPU where it fits now, by the rule orch serve uses
        placed = life.place(app.resolve(name), check_memory=options.check_memory)
        plan, resolved = placed.plan, placed.resolved
        require_fit(plan)
        with _sigterm_raises():
            try:
                started = life.up(plan, resolved, options)
                if started.already_running:
                    console.print(
                        f"{name}: already running ({started.handle.describe()}, plan "
                        f"{plan.plan_hash}) at {started.record.endpoint}",
                        markup=False,
                    )
                    return 0
                _print_ready(console, plan, started)
                notifier.status(f"{name}: ready at {plan.endpoint}")
            except Terminated:
                _err(f"orch: {name}: SIGTERM: stopped what was started")
                return SIGTERM_EXIT
            except KeyboardInterrupt:
                _err(f"orch: {name}: interrupted: stopped what was started")
                return 130
        notifier.ready()
        if not args.foreground:
            return 0
        return _supervise(console, life, plan, started.handle, notifier)


def memory_lines(plan: Plan, rss_bytes: int, gpu_bytes: dict[int, int]) -> list[str]:
    """In-use memory next to the part of the plan it compares with, one line per device."""
    lines = []
    for row in comparable_memory(plan.memory, rss_bytes, gpu_bytes):
        what = "RSS" if row.device == "CPU" else "in use"
        text = f"  memory: {row.device} {what} {_size(row.in_use)} (plan: {_size(row.planned_now)}"
        if row.device == "CPU":
            text += " weights + KV + process"
        if row.later:
            later = ", ".join(f"{k} {_size(n)}" for k, n in row.later)
            text += f"; later, as prompts fill: {later}"
        lines.append(text + ")")
    return lines


def _print_ready(console: Console, plan: Plan, started: Started) -> None:
    console.print(f"{plan.name}: ready at {plan.endpoint}", markup=False)
    for i, s in enumerate(started.stats, 1):
        console.print(
            f"  warm-up {i}: TTFT {s.ttft_s * 1000:.0f} ms, prompt {s.prompt_tps:.1f} tok/s "
            f"({s.prompt_tokens} tok), generation {s.gen_tps:.1f} tok/s "
            f"({s.completion_tokens} tok) [{s.source}]",
            markup=False,
        )
    used = instances.memory_in_use(started.handle.pids())
    for line in memory_lines(plan, used.rss_bytes, used.gpu_bytes):
        console.print(line, markup=False)


def _supervise(
    console: Console, life: Lifecycle, plan: Plan, handle: Handle, notifier: Notifier
) -> int:
    """Stay in the foreground: watch /health, ping the watchdog, stop cleanly on SIGTERM."""
    interval = notifier.watchdog_interval_s()
    period = min(interval, 2.0) if interval else 2.0
    console.print(f"{plan.name}: supervising (SIGTERM or Ctrl-C stops it)", markup=False)

    def on_check(status: int | None) -> None:
        if status == 200:
            if interval:
                notifier.watchdog()
        else:
            notifier.status(f"{plan.name}: unhealthy (/health {status or 'no answer'})")

    with _sigterm_raises():
        try:
            for _ in life.watch(plan, handle, period, on_check):
                pass
        except (Terminated, KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            notifier.stopping()
            life.stop(plan, handle)
            console.print(f"{plan.name}: stopped", markup=False)
    return 0


# ---------------------------------------------------------------- down / status / ps / logs


def cmd_down(args: argparse.Namespace, app: App, console: Console) -> int:
    """Stop instances."""
    store = _store(app)
    names: list[str] = list(args.names)
    if args.all:
        records, corrupt = store.scan()  # corrupt records are cleared, never acted on
        names = sorted({r.name for r in records} | {c.name for c in corrupt if c.valid_name})
    if not names:
        if args.all:
            console.print("nothing running", markup=False)
            return 0
        raise NotRunningError("orch down: name a profile, or use --all")
    unknown = []
    profiles = set(app.catalog.model_names())
    with contextlib.ExitStack() as stack:
        life = Lifecycle(app, store, instances.Runtimes(app.settings, stack))
        for name in names:
            done = life.down(name, args.grace)
            if done.outcome == "missing" and name not in profiles:
                unknown.append(name)
            elif done.outcome == "missing":
                # already stopped is success, as for `systemctl stop` and `podman stop`
                console.print(f"{name}: not running; nothing to stop", markup=False)
            elif done.outcome == "cleared":
                console.print(
                    f"{name}: was not running ({done.detail}); cleared its record", markup=False
                )
            else:
                console.print(
                    f"{name}: stopped {done.detail} in {done.seconds:.2f} s", markup=False
                )
    if unknown:
        raise NotRunningError(
            f"not running: {', '.join(unknown)} (no record in {store.run_dir}, and no profile "
            "of that name)"
        )
    return 0


def cmd_status(args: argparse.Namespace, app: App, console: Console) -> int:
    """State, uptime, pid/container, port and live figures."""
    store = _store(app)
    records, corrupt = store.scan()
    if args.name:
        records = [r for r in records if r.name == args.name]
        corrupt = [c for c in corrupt if c.name == args.name]
        if not records and not corrupt:
            raise NotRunningError(f"{args.name} is not running (no record in {store.run_dir})")
    rows = []
    with contextlib.ExitStack() as stack:
        life = Lifecycle(app, store, instances.Runtimes(app.settings, stack))
        for record in records:
            key = None
            with contextlib.suppress(OrchError):
                key = instances.api_key(app.resolve(record.name).profile, os.environ)
            rows.append(life.state_of(record, key))
    rows.extend(corrupt_row(c) for c in corrupt)
    rows.sort(key=lambda row: str(row["name"]))
    if args.json:
        # always a list, one object per instance, with or without NAME
        console.print_json(json.dumps(rows))
    elif not rows:
        console.print("nothing running", markup=False)
    for row in [] if args.json else rows:
        if row["state"] == "corrupt record":
            console.print(f"{row['name']}: corrupt record", markup=False)
            console.print(f"  {row['detail']}", markup=False)
            continue
        where = f"pid {row['pid']}" if row["pid"] else f"container {row['container']}"
        up = _uptime(row["uptime_s"]) if row["uptime_s"] is not None else "-"
        by = _started_by(row)
        console.print(
            f"{row['name']}: {row['state']} · {row['engine']} via {row['runtime']} · {where} · "
            f"{row['endpoint']} · up {up} · {by}",
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
    bad = [r for r in rows if r["state"] in ("not running", "corrupt record")]
    return NotRunningError.exit_code if bad and args.name else 0


def corrupt_row(corrupt: CorruptRecord) -> dict[str, Any]:
    """A status row for a record that is not trusted: the same keys, nothing live."""
    fix = f"`orch down {corrupt.name}` removes it" if corrupt.valid_name else "remove it"
    return {
        "name": corrupt.name,
        "runtime": None,
        "engine": None,
        "state": "corrupt record",
        "detail": f"{corrupt} ({fix})",
        "pid": None,
        "container": None,
        "container_id": None,
        "endpoint": None,
        "port": None,
        "plan_hash": None,
        "started_at": None,
        "uptime_s": None,
        "log": None,
        "started_by": None,
        "gateway_pid": None,
    }


def _started_by(row: dict[str, Any]) -> str:
    if row.get("gateway_pid"):
        return f"orch serve (pid {row['gateway_pid']})"
    return "orch up"


def cmd_ps(args: argparse.Namespace, app: App, console: Console) -> int:
    """One line per instance orch started."""
    store = _store(app)
    rows: list[list[str]] = []
    with contextlib.ExitStack() as stack:
        runtimes = instances.Runtimes(app.settings, stack)
        records, corrupt = store.scan()
        for bad in corrupt:
            rows.append([bad.name, "-", "corrupt record", "-", "-", "-", "-"])
        for record in records:
            alive = runtimes.attach(record).alive()
            rows.append(
                [
                    record.name,
                    record.runtime,
                    "running" if alive else "not running",
                    str(record.pid) if record.pid else (record.container_name or "-"),
                    str(record.port),
                    _uptime(time.time() - record.started_at) if alive else "-",
                    _started_by({"gateway_pid": record.gateway_pid}),
                ]
            )
    if not rows:
        console.print("nothing running", markup=False)
        return 0
    columns = ("name", "runtime", "state", "pid/container", "port", "uptime", "started by")
    table = plain_table(None, columns, right_from=len(columns))
    for row in sorted(rows):
        table.add_row(*row)
    print_table(console, table, sorted(rows))
    return 0


def cmd_logs(args: argparse.Namespace, app: App, console: Console) -> int:
    """Print (and follow) an instance's output; Ctrl-C or SIGTERM ends following (exit 0)."""
    store = _store(app)
    lines = max(int(args.lines), 0)
    log_path = store.log_path(args.name)
    try:
        record = store.load(args.name)
    except CorruptRecord as exc:
        _err(f"orch: warning: {exc}; showing {log_path}")
        record = None
    if record is None and not log_path.is_file():
        raise NotRunningError(f"{args.name}: no record and no log at {log_path}")
    try:
        with _interrupts_raise(), contextlib.ExitStack() as stack:
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
                if not log_path.is_file():
                    raise NotRunningError(f"{args.name}: its log {log_path} is gone")
                _follow_file(log_path, lines, handle)
            else:
                _write_lines(process_rt.tail_file(log_path, lines) if lines else [])
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
