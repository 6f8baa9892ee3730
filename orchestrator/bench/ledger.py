"""The bench ledger: every result, one JSON object per line, in ``STATE_DIR/bench/NAME/``.

Append-safe: a result is one ``write`` of one line to a file opened with ``O_APPEND``,
under ``flock`` and followed by ``fsync``. A crash mid-write can leave only the last line
cut short; the reader skips a line it cannot parse and says so, and the next append starts
on a fresh line, so nothing written before is lost.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.bench.stats import Spread, steady_start
from orchestrator.state import StateStore

SCHEMA = 1
LEDGER_FILE = "ledger.jsonl"

Method = Literal["series", "sweep"]


@dataclass(frozen=True)
class RunRow:
    """One request of a bench, as measured."""

    run: int
    """1-based position in the bench."""
    requested_tokens: int
    """The prompt size (series) or depth (sweep) the schedule asked for."""
    prompt_tokens: int
    """Prompt tokens the engine processed (its own count)."""
    generated: int
    pp_tps: float
    tg_tps: float
    ttft_s: float
    total_s: float
    """Wall-clock seconds of the whole request, as the client saw it."""
    source: str
    """``timings`` (the engine's own figures) or ``wall-clock`` (orch's clock, vLLM)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRow:
        """Inverse of ``asdict``; raises KeyError/TypeError/ValueError on a malformed row."""
        return cls(
            run=int(data["run"]),
            requested_tokens=int(data["requested_tokens"]),
            prompt_tokens=int(data["prompt_tokens"]),
            generated=int(data["generated"]),
            pp_tps=float(data["pp_tps"]),
            tg_tps=float(data["tg_tps"]),
            ttft_s=float(data["ttft_s"]),
            total_s=float(data["total_s"]),
            source=str(data["source"]),
        )


@dataclass(frozen=True)
class BenchResult:
    """One ``orch bench`` result, with what it ran against."""

    id: str
    name: str
    method: Method
    date: str
    orch_version: str
    plan_hash: str
    engine: str
    engine_build: str
    """What the engine says it is (llama-server's /props build_info, vLLM's /version)."""
    engine_file: str
    """What orch ran: the binary's sha256 (process) or the image ID (podman), "" if unknown."""
    hardware: str
    max_tokens: int
    prompt_cache: bool
    planned: tuple[int, ...]
    """What the schedule asked for: each run's prompt size (series), or the depths (sweep)."""
    runs: tuple[RunRow, ...]
    steady_from: int
    """0-based index of the first steady-state run (the runs before it are warm-up)."""
    steady_rule: str
    """``auto`` (stats.steady_start) or ``--warmup-runs N``."""
    skipped: tuple[str, ...] = ()
    """What a time-bounded sweep left out, and why."""
    chart: str | None = None
    """The sweep's SVG, a file name next to the ledger."""
    host_load: tuple[float, ...] = ()
    """The host's 1-minute load average before and after: other work slows a bench too."""
    schema: int = SCHEMA

    @property
    def steady(self) -> tuple[RunRow, ...]:
        """The steady-state runs."""
        return self.runs[self.steady_from :]

    def summary(self) -> dict[str, Spread]:
        """min/mean/max of PP and TG tok/s over the steady state."""
        return {
            "pp_tps": Spread.of([r.pp_tps for r in self.steady]),
            "tg_tps": Spread.of([r.tg_tps for r in self.steady]),
        }

    def to_json(self) -> dict[str, Any]:
        """What the ledger stores: the raw rows and how they were cut, no derived figures."""
        data = asdict(self)
        data["runs"] = [asdict(r) for r in self.runs]
        data["planned"] = list(self.planned)
        data["skipped"] = list(self.skipped)
        data["host_load"] = list(self.host_load)
        return data

    def to_report(self) -> dict[str, Any]:
        """``to_json`` plus the steady-state summary, for ``--json`` output."""
        return {
            **self.to_json(),
            "summary": {key: spread.to_json() for key, spread in self.summary().items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        """Inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError when malformed."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        method = data["method"]
        if method not in ("series", "sweep"):
            raise ValueError(f"unknown method {method!r}")
        chart = data.get("chart")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            method=method,
            date=str(data["date"]),
            orch_version=str(data["orch_version"]),
            plan_hash=str(data["plan_hash"]),
            engine=str(data["engine"]),
            engine_build=str(data["engine_build"]),
            engine_file=str(data.get("engine_file", "")),
            hardware=str(data["hardware"]),
            max_tokens=int(data["max_tokens"]),
            prompt_cache=bool(data["prompt_cache"]),
            planned=tuple(int(x) for x in data["planned"]),
            runs=tuple(RunRow.from_json(r) for r in data["runs"]),
            steady_from=int(data["steady_from"]),
            steady_rule=str(data["steady_rule"]),
            skipped=tuple(str(s) for s in data.get("skipped", ())),
            chart=str(chart) if chart else None,
            host_load=tuple(float(x) for x in data.get("host_load", ())),
            schema=int(data.get("schema", SCHEMA)),
        )


def cut(runs: Sequence[RunRow], warmup_runs: int | None) -> tuple[int, str]:
    """Where the steady state starts: ``warmup_runs`` if given, else the automatic rule."""
    if warmup_runs is not None:
        return min(warmup_runs, len(runs)), f"--warmup-runs {warmup_runs}"
    return steady_start([r.tg_tps for r in runs]), "auto"


# ---------------------------------------------------------------- text


def encode(result: BenchResult) -> str:
    """One ledger line (with its newline)."""
    return json.dumps(result.to_json(), sort_keys=True, separators=(",", ":")) + "\n"


@dataclass(frozen=True)
class Ledger:
    """What a ledger file holds: the results, and the lines that could not be read."""

    results: tuple[BenchResult, ...]
    damaged: tuple[int, ...] = ()
    """1-based line numbers that are not a result (a write cut short by a crash)."""


def parse(text: str) -> Ledger:
    """Every result in a ledger's text, in order; unreadable lines are listed, not fatal."""
    results: list[BenchResult] = []
    damaged: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            results.append(BenchResult.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            damaged.append(number)
    return Ledger(tuple(results), tuple(damaged))


def find(results: Sequence[BenchResult], ref: str) -> list[BenchResult]:
    """Results matching ``ref``: a 1-based position (``3`` or ``#3``), an id, or an id prefix.

    More than one match means the prefix is ambiguous.
    """
    key = ref.removeprefix("#")
    if key.isdigit() and len(key) < 6:
        index = int(key)
        return [results[index - 1]] if 1 <= index <= len(results) else []
    exact = [r for r in results if r.id == ref]
    return exact[-1:] or [r for r in results if r.id.startswith(ref)]


def previous_comparable(
    results: Sequence[BenchResult], *, method: Method, plan_hash: str
) -> BenchResult | None:
    """The latest result of the same method and plan hash."""
    for result in reversed(results):
        if result.method == method and result.plan_hash == plan_hash:
            return result
    return None


# ---------------------------------------------------------------- files


def folder(state_dir: Path, name: str) -> Path:
    """Where ``name``'s ledger and charts live (``name`` must be a profile name)."""
    return StateStore(state_dir).bench_folder(name)


def read(path: Path) -> Ledger:
    """The ledger at ``path`` (empty if there is none)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return Ledger(())
    return parse(text)


def append(path: Path, result: BenchResult) -> None:
    """Append one result durably; a cut-short last line from an earlier crash is left alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = encode(result).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # the previous writer died mid-line: start afresh
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
