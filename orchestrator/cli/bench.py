"""``orch bench``: seed 003's method, a depth sweep, and the ledger (history, compare)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator import __version__, health, instances, warmup
from orchestrator.app import App
from orchestrator.bench import chart, ledger, schedule, stats
from orchestrator.bench.ledger import BenchResult, Method, RunRow
from orchestrator.bench.run import Target, engine_build, file_digest, run_series, run_sweep
from orchestrator.cli.output import make_console
from orchestrator.engines import adapter_for
from orchestrator.errors import NotRunningError, PreflightError, ProfileError
from orchestrator.plan import Plan
from orchestrator.profiles.schema import PodmanRuntime
from orchestrator.runtime import podman as podman_rt
from orchestrator.state import Record, StateStore

REGRESSION_EXIT = 7
DEFAULT_RUNS = 8
DEFAULT_MAX_TOKENS = 128
DEFAULT_BUDGET_S = 600.0

DESCRIPTION = """\
Measure a running instance the way the lab notes do (seed 003), and remember the result.

series (default): --runs requests, prompts from a few hundred to ~16K tokens (within what one
  request may hold), each generating --max-tokens. A table per run (prompt tokens, generated,
  PP tok/s, TG tok/s, total s), the steady-state cut, and min/mean/max over the steady state.
  Warm-up: the leading runs whose TG lies outside the band the second half settles in
  (median +-max(5 %, 3 robust sigma)), at most half the runs; --warmup-runs N fixes it.
--sweep: one request per context depth (0, 512, 1K, 2K, 4K, ... up to the profile's ctx),
  shallowest first, within --budget seconds; depths predicted not to fit are skipped and
  listed. Draws TG and PP against depth in the terminal and as an SVG next to the ledger.

Prompts defeat the prompt cache (a unique prefix per request; llama-server also gets
cache_prompt=false) unless --prompt-cache. Every result is appended to
STATE_DIR/bench/NAME/ledger.jsonl with the plan hash, engine build, hardware profile, orch
version, date and the raw rows.

--compare [REF] runs the bench again with the reference's settings and reports the change of
TG and PP tok/s with a 95 % confidence interval (paired t over runs of the same prompt size,
else Welch's t, on log tok/s). REF: a ledger position (3 or #3) or a result id (prefix);
default: the latest result with the same method and plan hash."""

EPILOG = f"""\
examples:
  orch bench demo                          {DEFAULT_RUNS} runs, seed 003's table
  orch bench demo --runs 28 --max-tokens 512
  orch bench demo --sweep --budget 300     TG/PP against context depth, SVG
  orch bench demo --history [--json]
  orch bench demo --compare                against the previous comparable result

exit codes:
  0  done (with --compare: no significant regression, or too few runs to tell)
  2  bad arguments, or no reference result to compare with
  5  the engine answered a request with an error
  6  NAME is not running (--history works without it)
  {REGRESSION_EXIT}  --compare: TG or PP is significantly slower than the reference, by more
     than the threshold
"""


def register(commands: Any) -> None:
    """Add ``orch bench``."""
    p = commands.add_parser(
        "bench",
        help="prefill and generation speed of a running instance, remembered in a ledger",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--runs", type=int, metavar="N", help=f"series: requests (default {DEFAULT_RUNS})"
    )
    p.add_argument(
        "--prompt-tokens",
        metavar="LIST",
        help="series: comma-separated prompt sizes, cycled (default: 512, 1K, ... 16K within "
        "the profile's ctx)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help=f"tokens generated per request (default {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument(
        "--warmup-runs",
        type=int,
        metavar="N",
        help="series: count the first N runs as warm-up (default: auto)",
    )
    p.add_argument(
        "--prompt-cache", action="store_true", help="let the engine reuse cached prompt prefixes"
    )
    p.add_argument("--sweep", action="store_true", help="TG and PP against context depth")
    p.add_argument(
        "--depths",
        metavar="LIST",
        help="sweep: comma-separated depths (default: 0, 512, 1K, ... ctx)",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help=f"sweep: seconds for the whole sweep (default {DEFAULT_BUDGET_S:g})",
    )
    p.add_argument("--history", action="store_true", help="list the results in the ledger")
    p.add_argument(
        "--compare",
        nargs="?",
        const="",
        metavar="REF",
        help="bench again and report the change against REF (default: the previous comparable "
        f"result); exit {REGRESSION_EXIT} on a significant regression",
    )
    p.add_argument(
        "--threshold",
        type=float,
        metavar="PCT",
        help="--compare: the smallest slowdown that counts, in %% (default: measured, "
        f"{stats.NOISE_SIGMAS:g} sigma of the drift between the ledger's benches of the same "
        f"configuration, at least {stats.THRESHOLD_FLOOR * 100:g} %%)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_bench)


# ---------------------------------------------------------------- helpers


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ProfileError(option, [f"{text!r} is not a comma-separated list of token counts"])
    return values


def _positive(value: float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise ProfileError(option, [f"{value:g} must be greater than 0"])


def _ledger_path(app: App, name: str) -> Path:
    return ledger.folder(app.settings.state_dir, name) / ledger.LEDGER_FILE


def _read_ledger(path: Path) -> ledger.Ledger:
    found = ledger.read(path)
    if found.damaged:
        lines = ", ".join(map(str, found.damaged))
        _err(f"note: {path}: skipped unreadable line(s) {lines} (a write cut short?)")
    return found


def _err(text: str) -> None:
    make_console(stderr=True).print(text, markup=False)


def _target(plan: Plan, record: Record) -> Target:
    llama = adapter_for(plan.profile.engine).reports_timings
    # llama-server's own timings, its prompt cache off per request; otherwise (vLLM) the
    # stream, timed by orch.
    measure, no_cache = (
        (warmup.chat, {"cache_prompt": False}) if llama else (warmup.chat_streamed, {})
    )
    return Target(
        endpoint=record.endpoint,
        model=instances.model_name(plan),
        api_key=instances.api_key(plan.profile, os.environ),
        measure=measure,
        no_cache=no_cache,
    )


def _engine_file(app: App, plan: Plan) -> tuple[Path | None, str]:
    """The engine binary (a process) and what identifies the build orch ran.

    A process: the binary's SHA-256. Podman: the image ID (a rebuilt image gets a new one).
    """
    runtime = plan.profile.runtime
    if isinstance(runtime, PodmanRuntime):
        try:
            image = podman_rt.inspect_image(app.settings.podman_binary, runtime.image)
        except PreflightError:
            image = None
        return None, f"image {image.id.removeprefix('sha256:')[:16]}" if image else ""
    found = shutil.which(str(Path(plan.profile.engine.binary).expanduser()))
    if found is None:
        return None, ""
    return Path(found), file_digest(Path(found))


def _new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(2).hex()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _fmt(value: float) -> str:
    return chart.value_label(value)


# ---------------------------------------------------------------- the command


def cmd_bench(args: argparse.Namespace, app: App, console: Console) -> int:
    """Bench a running instance (series or sweep), or list / compare ledger results."""
    _check_numbers(args)
    path = _ledger_path(app, args.name)
    if args.history:
        return _history(args, path, console)

    record = StateStore(app.settings.state_dir).load(args.name)
    if record is None:
        raise NotRunningError(f"{args.name} is not running (start it with `orch up {args.name}`)")
    plan = app.plan(args.name, read_header=False)
    if plan.plan_hash != record.plan_hash:
        _err(
            f"note: {args.name}'s profile changed since `orch up` (plan {plan.plan_hash}); "
            f"benching what runs (plan {record.plan_hash})"
        )
    ref = _reference(args, path, record) if args.compare is not None else None
    if health.probe(record.endpoint) != 200:
        raise NotRunningError(f"{args.name}: {record.endpoint}/health is not 200")

    result = _measure(args, app, plan, record, ref, console)
    if result.method == "sweep" and result.runs:
        result = _draw(result, path.parent)
    ledger.append(path, result)
    results = ledger.read(path).results

    changes = None
    if ref is not None:
        others = [r for r in results if r.id != result.id]
        changes = _compare(ref, result, _thresholds(args.threshold, ref, others))
    if args.json:
        report = result.to_report()
        report["ledger"] = str(path)
        if changes is not None and ref is not None:
            report["compare"] = {"ref": ref.id, "changes": [c.to_json() for c in changes]}
        console.print_json(json.dumps(report))
    else:
        position = next(i for i, r in enumerate(results, start=1) if r.id == result.id)
        _print_result(console, result, path, position)
        if changes is not None and ref is not None:
            _print_compare(console, ref, result, changes)
    regressed = changes is not None and any(c.verdict == "regression" for c in changes)
    return REGRESSION_EXIT if regressed else 0


def _check_numbers(args: argparse.Namespace) -> None:
    for value, option in (
        (args.runs, "--runs"),
        (args.max_tokens, "--max-tokens"),
        (args.budget, "--budget"),
    ):
        _positive(value, option)
    if args.warmup_runs is not None and args.warmup_runs < 0:
        raise ProfileError("--warmup-runs", [f"{args.warmup_runs} must be 0 or more"])


def _measure(
    args: argparse.Namespace,
    app: App,
    plan: Plan,
    record: Record,
    ref: BenchResult | None,
    console: Console,
) -> BenchResult:
    """Run the series or the sweep (as asked, or as the reference was) and describe it."""
    method: Method = "sweep" if args.sweep or args.depths else "series"
    if ref is not None and not (args.sweep or args.depths):
        method = ref.method
    if ref is not None and ref.method != method:
        raise ProfileError(
            "--compare",
            [f"{ref.id} is a {ref.method} result; a {method} cannot be compared with it"],
        )
    max_tokens = args.max_tokens or (ref.max_tokens if ref else DEFAULT_MAX_TOKENS)
    prompt_cache = args.prompt_cache or (ref.prompt_cache if ref else False)
    limit = schedule.prompt_limit(schedule.request_limit(plan.profile), max_tokens)
    if limit < 1:
        raise ProfileError(
            "--max-tokens", [f"{max_tokens} leaves no room for a prompt in {args.name}'s context"]
        )
    if method == "series":
        planned = _series_schedule(args, ref, limit)
    else:
        planned = _sweep_depths(args, ref, limit)

    target = _target(plan, record)
    binary, engine_file = _engine_file(app, plan)
    build = engine_build(record.endpoint, target.api_key, binary)
    progress = _Progress(console, quiet=args.json, sweep=method == "sweep")
    progress.header(args.name, len(planned), max_tokens, f"{plan.profile.engine.kind} {build}")
    load_before = os.getloadavg()[0]
    skipped: list[str] = []
    if method == "series":
        rows = run_series(
            target, planned, max_tokens=max_tokens, prompt_cache=prompt_cache, on_row=progress
        )
        steady_from, rule = ledger.cut(rows, args.warmup_runs)
    else:
        rows, skipped = run_sweep(
            target,
            planned,
            max_tokens=max_tokens,
            budget_s=args.budget or DEFAULT_BUDGET_S,
            prompt_cache=prompt_cache,
            on_row=progress,
        )
        steady_from, rule = 0, "sweep: every depth counts"
    return BenchResult(
        id=_new_id(),
        name=args.name,
        method=method,
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        orch_version=__version__,
        plan_hash=record.plan_hash,
        engine=plan.profile.engine.kind,
        engine_build=build,
        engine_file=engine_file,
        hardware=plan.hardware_name,
        max_tokens=max_tokens,
        prompt_cache=prompt_cache,
        planned=tuple(planned),
        runs=tuple(rows),
        steady_from=steady_from,
        steady_rule=rule,
        skipped=tuple(skipped),
        host_load=(round(load_before, 2), round(os.getloadavg()[0], 2)),
    )


def _series_schedule(args: argparse.Namespace, ref: BenchResult | None, limit: int) -> list[int]:
    """Each run's prompt size: as asked, as the reference had them, or seed 003's spread."""
    if args.prompt_tokens is None and args.runs is None and ref is not None:
        # the same prompts in the same order: runs pair up for the comparison
        return _fitting(list(ref.planned), limit, f"--compare {ref.id}")
    if args.prompt_tokens is not None:
        sizes = _fitting(_int_list(args.prompt_tokens, "--prompt-tokens"), limit, "--prompt-tokens")
    else:
        sizes = schedule.series_sizes(limit) or [limit]
    runs = args.runs or (len(ref.runs) if ref is not None else DEFAULT_RUNS)
    return schedule.series_schedule(sizes, runs)


def _sweep_depths(args: argparse.Namespace, ref: BenchResult | None, limit: int) -> list[int]:
    """The depths to visit: as asked, as the reference had them, or 0, 512, 1K, ... ctx."""
    if args.depths is not None:
        return _fitting(sorted(set(_int_list(args.depths, "--depths"))), limit, "--depths")
    if ref is not None:
        return _fitting(list(ref.planned), limit, f"--compare {ref.id}")
    return schedule.sweep_depths(limit)


def _fitting(sizes: list[int], limit: int, option: str) -> list[int]:
    too_big = sorted({s for s in sizes if s > limit})
    if too_big:
        raise ProfileError(
            option,
            [
                f"{', '.join(map(str, too_big))}: more than the {limit} prompt tokens one request "
                "may hold here (context per slot - --max-tokens - "
                f"{schedule.TEMPLATE_MARGIN} for the chat template)"
            ],
        )
    return sizes


def _reference(args: argparse.Namespace, path: Path, record: Record) -> BenchResult:
    results = _read_ledger(path).results
    if args.compare:
        found = ledger.find(results, args.compare)
        if len(found) != 1:
            why = "matches several results" if found else "is no result"
            raise ProfileError("--compare", [f"{args.compare!r} {why} in {path} (see `--history`)"])
        return found[0]
    method: Method = "sweep" if args.sweep or args.depths else "series"
    ref = ledger.previous_comparable(results, method=method, plan_hash=record.plan_hash)
    if ref is None:
        raise ProfileError(
            "--compare",
            [
                f"no earlier {method} result with plan hash {record.plan_hash} in {path}; "
                f"run `orch bench {args.name}` first, or give REF (see `--history`)"
            ],
        )
    return ref


def _draw(result: BenchResult, folder: Path) -> BenchResult:
    """Write the sweep's SVG next to the ledger; the result then names it."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"sweep-{result.id}.svg"
    note = (
        f"not measured: {len(result.skipped)} deeper depth(s), over the time budget"
        if (result.skipped)
        else ""
    )
    svg = chart.sweep_svg(
        result.runs,
        title=f"{result.name}: speed against context depth",
        subtitle=(
            f"{result.engine} {result.engine_build} · {result.hardware} · plan {result.plan_hash}"
            f" · {result.date} · {result.max_tokens} tokens generated per depth"
        ),
        note=note,
    )
    _write_atomically(folder / name, svg)
    return dataclasses.replace(result, chart=name)


def _thresholds(
    given_pct: float | None, ref: BenchResult, others: Sequence[BenchResult]
) -> dict[str, tuple[float, str]]:
    """Per metric: the slowdown that counts as a regression, and what it rests on."""
    if given_pct is not None:
        return {key: (given_pct / 100, "--threshold") for key in METRICS.values()}
    repeats = [r for r in others if _same_configuration(r, ref)]
    out = {}
    for key in METRICS.values():
        threshold, sigma = stats.noise_threshold([r.summary()[key].mean for r in repeats])
        if sigma is None:
            basis = (
                f"the {stats.THRESHOLD_FLOOR:.0%} floor: the ledger holds fewer than "
                f"{stats.MIN_NOISE_RESULTS} benches of this configuration to measure its drift"
            )
        else:
            basis = (
                f"{stats.NOISE_SIGMAS:g} sigma of the drift between the {len(repeats)} benches "
                f"of this configuration in the ledger (sigma {sigma:.3f} of log mean tok/s), "
                f"at least {stats.THRESHOLD_FLOOR:.0%}"
            )
        out[key] = (threshold, basis)
    return out


def _same_configuration(a: BenchResult, b: BenchResult) -> bool:
    """Repeats of one bench: same plan, engine build, prompts and generation."""
    return (a.method, a.plan_hash, a.engine_file, a.engine_build, a.planned) == (
        b.method,
        b.plan_hash,
        b.engine_file,
        b.engine_build,
        b.planned,
    ) and (a.max_tokens, a.prompt_cache) == (b.max_tokens, b.prompt_cache)


METRICS = {"TG tok/s": "tg_tps", "PP tok/s": "pp_tps"}


def _compare(
    ref: BenchResult, new: BenchResult, thresholds: dict[str, tuple[float, str]]
) -> list[stats.Change]:
    """TG and PP of ``new`` against ``ref``, over their steady states.

    Runs pair up when they asked for the same prompt size (the k-th run of a size with the
    k-th of that size) and generated as much: then a paired test, else Welch's.
    """
    ref_steady, new_steady = _keyed(ref), _keyed(new)
    common = [key for key in ref_steady if key in new_steady]
    paired = ref.max_tokens == new.max_tokens and len(common) >= stats.MIN_COMPARE_RUNS
    if paired:
        ref_rows = [ref_steady[key] for key in common]
        new_rows = [new_steady[key] for key in common]
    else:
        ref_rows, new_rows = list(ref.steady), list(new.steady)
    return [
        stats.compare(
            label,
            [getattr(r, key) for r in ref_rows],
            [getattr(r, key) for r in new_rows],
            paired=paired,
            threshold=thresholds[key][0],
            threshold_basis=thresholds[key][1],
        )
        for label, key in METRICS.items()
    ]


def _keyed(result: BenchResult) -> dict[tuple[int, int], RunRow]:
    """Steady runs by (asked size, how many runs of that size came before)."""
    seen: dict[int, int] = {}
    out: dict[tuple[int, int], RunRow] = {}
    for index, row in enumerate(result.runs):
        count = seen.get(row.requested_tokens, 0)
        seen[row.requested_tokens] = count + 1
        if index >= result.steady_from:
            out[(row.requested_tokens, count)] = row
    return out


# ---------------------------------------------------------------- printing


class _Progress:
    """Prints the per-run table a row at a time, as the runs finish (stderr with --json)."""

    def __init__(self, console: Console, *, quiet: bool, sweep: bool) -> None:
        self.console = console if not quiet else make_console(stderr=True)
        self.sweep = sweep

    def header(self, name: str, count: int, max_tokens: int, engine: str) -> None:
        what = f"sweep · {count} depths" if self.sweep else f"series · {count} runs"
        self.console.print(
            f"{name} · {what} · {max_tokens} tokens generated each · {engine}",
            markup=False,
        )
        depth = f"{'depth':>7}  " if self.sweep else ""
        self.console.print(
            f"{'#':>4}  {depth}{'prompt tok':>10}  {'generated':>9}  {'PP tok/s':>9}  "
            f"{'TG tok/s':>9}  {'total s':>8}",
            markup=False,
        )

    def __call__(self, row: RunRow) -> None:
        depth = f"{chart.tokens_label(row.requested_tokens):>7}  " if self.sweep else ""
        self.console.print(
            f"{row.run:>4}  {depth}{row.prompt_tokens:>10,}  {row.generated:>9,}  "
            f"{_fmt(row.pp_tps):>9}  {_fmt(row.tg_tps):>9}  {row.total_s:>8.2f}",
            markup=False,
        )


def _print_result(console: Console, result: BenchResult, path: Path, position: int) -> None:
    lines = _series_lines(result) if result.method == "series" else _sweep_lines(result, path)
    for line in [*lines, f"saved as #{position} ({result.id}) in {path}"]:
        console.print(line, markup=False)


def _series_lines(result: BenchResult) -> list[str]:
    """The steady-state cut and why, min/mean/max over it, and TG per prompt size."""
    runs = len(result.runs)
    lines = []
    if result.steady_from:
        warm = "run 1" if result.steady_from == 1 else f"runs 1-{result.steady_from}"
        lines.append(f"warm-up: {warm}; steady state: runs {result.steady_from + 1}-{runs}")
    else:
        lines.append(f"steady state: all {runs} runs")
    if result.steady_rule != "auto":
        lines.append(f"  ({result.steady_rule})")
    elif runs < stats.MIN_STEADY_CUT_RUNS:
        lines.append(f"  (auto: fewer than {stats.MIN_STEADY_CUT_RUNS} runs, nothing cut)")
    else:
        settled, band = stats.steady_band([r.tg_tps for r in result.runs])
        lines.append(
            f"  (auto: TG settles at {_fmt(settled)} tok/s, the median of runs "
            f"{runs // 2 + 1}-{runs}, band ±{_fmt(band)}; warm-up ends after the last early "
            "run outside it)"
        )
    summary = result.summary()
    pp, tg = summary["pp_tps"], summary["tg_tps"]
    rows = [[f"steady state ({tg.n} runs)", "PP tok/s", "TG tok/s"]]
    rows += [[k, _fmt(getattr(pp, k)), _fmt(getattr(tg, k))] for k in ("min", "mean", "max")]
    rows.append(["cv", f"{pp.cv:.1%}", f"{tg.cv:.1%}"])
    lines += _columns(rows, right=(1, 2))
    by_size = _tg_by_size(result.steady)
    lines.append("TG by prompt size (steady): " + " · ".join(f"{k:,}: {v}" for k, v in by_size))
    return lines


def _sweep_lines(result: BenchResult, path: Path) -> list[str]:
    """Bars per depth, what was skipped, and where the picture is."""
    lines = chart.bars(result.runs) + list(result.skipped)
    if result.chart:
        lines.append(f"chart: {path.parent / result.chart}")
    return lines


def _tg_by_size(rows: Sequence[RunRow]) -> list[tuple[int, str]]:
    sizes: dict[int, list[float]] = {}
    for row in rows:
        sizes.setdefault(row.requested_tokens, []).append(row.tg_tps)
    return [(size, _fmt(sum(v) / len(v))) for size, v in sorted(sizes.items())]


def _columns(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Rows of cells as aligned text (plain, so a narrow terminal does not wrap cells)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _print_compare(
    console: Console, ref: BenchResult, new: BenchResult, changes: Sequence[stats.Change]
) -> None:
    first = changes[0]
    how = (
        f"{first.method} over {first.pairs} pairs of runs of the same prompt size"
        if first.method == "paired t"
        else f"{first.method} over the steady states (no {stats.MIN_COMPARE_RUNS} runs pair up)"
    )
    lines = [f"{new.name}: {new.id} against {ref.id}, {how}"]
    rows = [["", "reference", "new", "change", "95 % interval", "verdict"]]
    for c in changes:
        interval = (
            f"{c.low:+.1%} .. {c.high:+.1%}" if c.low is not None and c.high is not None else "-"
        )
        rows.append(
            [c.metric, _fmt(c.ref.mean), _fmt(c.new.mean), f"{c.change:+.1%}", interval, c.verdict]
        )
    lines += ["  " + line for line in _columns(rows, right=(1, 2, 3, 4))]
    if ref.engine_build != new.engine_build:
        lines.append(f"engine build: {ref.engine_build} -> {new.engine_build}")
    if ref.engine_file != new.engine_file:
        lines.append(f"engine file: {ref.engine_file} -> {new.engine_file}")
    if ref.plan_hash != new.plan_hash:
        lines.append(f"plan hash: {ref.plan_hash} -> {new.plan_hash}")
    if ref.host_load and new.host_load:
        lines.append(
            "host load average before/after: "
            f"{ref.host_load[0]:g}/{ref.host_load[-1]:g} -> "
            f"{new.host_load[0]:g}/{new.host_load[-1]:g} on {os.cpu_count()} CPUs"
        )
    lines.append("regression: significantly slower (the whole interval below 0) by more than")
    for c in changes:
        lines.append(f"  {c.metric}: {c.threshold:.0%} ({c.threshold_basis})")
    for line in lines:
        console.print(line, markup=False)


def _history(args: argparse.Namespace, path: Path, console: Console) -> int:
    results = _read_ledger(path).results
    if args.json:
        console.print_json(json.dumps([r.to_report() for r in results]))
        return 0
    if not results:
        console.print(f"no results for {args.name} in {path}", markup=False)
        return 0
    rows = [
        [
            "#",
            "id",
            "date",
            "method",
            "steady",
            "TG tok/s mean (min-max)",
            "PP tok/s mean (min-max)",
            "engine build",
            "plan",
            "hardware",
        ]
    ]
    for position, r in enumerate(results, start=1):
        s = r.summary()
        tg, pp = s["tg_tps"], s["pp_tps"]
        rows.append(
            [
                str(position),
                r.id,
                r.date,
                r.method,
                f"{tg.n}/{len(r.runs)}",
                f"{_fmt(tg.mean)} ({_fmt(tg.min)}-{_fmt(tg.max)})",
                f"{_fmt(pp.mean)} ({_fmt(pp.min)}-{_fmt(pp.max)})",
                r.engine_build,
                r.plan_hash,
                r.hardware,
            ]
        )
    console.print(f"{args.name}: {len(results)} result(s) in {path}", markup=False)
    for line in _columns(rows, right=(0, 4)):
        console.print("  " + line, markup=False)
    return 0
