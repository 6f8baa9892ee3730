"""The bench ledger (append-safe JSON lines) and the depth-sweep picture, without an engine."""

from __future__ import annotations

import multiprocessing
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.bench import chart, ledger
from orchestrator.bench.ledger import BenchResult, RunRow

SVG_NS = "{http://www.w3.org/2000/svg}"


def _row(run: int, tokens: int, pp: float = 160.0, tg: float = 22.5) -> RunRow:
    return RunRow(
        run=run,
        requested_tokens=tokens,
        prompt_tokens=max(tokens, 16) + 12,
        generated=128,
        pp_tps=pp,
        tg_tps=tg,
        ttft_s=tokens / pp,
        total_s=tokens / pp + 128 / tg,
        source="timings",
    )


def _result(ident: str, plan_hash: str = "abc123", method: str = "series") -> BenchResult:
    rows = tuple(_row(i + 1, size) for i, size in enumerate((512, 4096, 1024, 512)))
    return BenchResult.from_json(
        {
            "id": ident,
            "name": "demo",
            "method": method,
            "date": "2026-11-30T04:00:00Z",
            "orch_version": "0.1.0",
            "plan_hash": plan_hash,
            "engine": "llama.cpp",
            "engine_build": "b11434-deadbeef",
            "engine_file": "sha256:0123456789abcdef",
            "hardware": "small-cpu",
            "max_tokens": 128,
            "prompt_cache": False,
            "planned": [r.requested_tokens for r in rows],
            "runs": [r.__dict__ for r in rows],
            "steady_from": 1,
            "steady_rule": "auto",
        }
    )


def test_round_trip() -> None:
    result = _result("20261130-040000-aaaa")
    parsed = ledger.parse(ledger.encode(result))
    assert parsed.results == (result,) and parsed.damaged == ()
    report = result.to_report()
    assert report["summary"]["tg_tps"]["n"] == 3  # steady_from = 1
    assert len(report["runs"]) == 4 and "summary" not in result.to_json()


def test_truncated_last_line_loses_nothing_before_it(tmp_path: Path) -> None:
    path = tmp_path / "bench" / "demo" / ledger.LEDGER_FILE
    first, second, third = (_result(f"2026113{i}-040000-aaaa") for i in range(3))
    ledger.append(path, first)
    ledger.append(path, second)
    whole = ledger.encode(third)
    with path.open("a") as fh:
        fh.write(whole[: len(whole) // 2])  # a crash mid-write
    read = ledger.read(path)
    assert [r.id for r in read.results] == [first.id, second.id]
    assert read.damaged == (3,)

    fourth = _result("20261134-040000-aaaa")
    ledger.append(path, fourth)  # starts on a fresh line, not glued to the stub
    read = ledger.read(path)
    assert [r.id for r in read.results] == [first.id, second.id, fourth.id]
    assert read.damaged == (3,)
    assert path.read_text().endswith("\n")


def test_unreadable_lines_are_listed_not_fatal() -> None:
    good = ledger.encode(_result("20261130-040000-aaaa"))
    text = "not json\n" + good + '{"id": "x"}\n' + "\n" + '{"method": "other"}\n' + good
    parsed = ledger.parse(text)
    assert len(parsed.results) == 2 and parsed.damaged == (1, 3, 5)


def _append_many(path: str, prefix: str) -> None:
    for i in range(15):
        ledger.append(Path(path), _result(f"{prefix}-{i:04d}"))


def test_concurrent_appends_interleave_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / ledger.LEDGER_FILE
    procs = [
        multiprocessing.get_context("fork").Process(target=_append_many, args=(str(path), p))
        for p in ("20261130-a", "20261130-b", "20261130-c")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    read = ledger.read(path)
    assert read.damaged == () and len(read.results) == 45


def test_find_by_position_id_and_prefix() -> None:
    results = [_result("20261130-040000-aaaa"), _result("20261130-050000-bbbb")]
    assert ledger.find(results, "2") == [results[1]]
    assert ledger.find(results, "#1") == [results[0]]
    assert ledger.find(results, "3") == []
    assert ledger.find(results, "20261130-05") == [results[1]]
    assert ledger.find(results, "20261130-0") == results  # ambiguous: the caller says so
    assert ledger.find(results, "20261130-040000-aaaa") == [results[0]]


def test_previous_comparable_needs_same_method_and_plan_hash() -> None:
    results = [
        _result("1", "abc"),
        _result("2", "abc", method="sweep"),
        _result("3", "other"),
    ]
    assert ledger.previous_comparable(results, method="series", plan_hash="abc") == results[0]
    assert ledger.previous_comparable(results, method="sweep", plan_hash="abc") == results[1]
    assert ledger.previous_comparable(results, method="sweep", plan_hash="other") is None


def test_cut() -> None:
    rows = [_row(i + 1, 512, tg=tg) for i, tg in enumerate([12.0, 22.0, 22.1, 22.2, 21.9, 22.0])]
    assert ledger.cut(rows, None) == (1, "auto")
    assert ledger.cut(rows, 3) == (3, "--warmup-runs 3")
    assert ledger.cut(rows, 99) == (6, "--warmup-runs 99")


# ---------------------------------------------------------------- the picture

SWEEP = [
    _row(1, 0, pp=101.5, tg=24.0),
    _row(2, 4096, pp=240.0, tg=22.9),
    _row(3, 16384, pp=372.2, tg=22.0),
    _row(4, 65536, pp=300.0, tg=19.1),
]


def test_sweep_svg_is_well_formed_and_labels_its_axes() -> None:
    svg = chart.sweep_svg(SWEEP, title="demo <&> speed", subtitle="llama.cpp b1 · small-cpu")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    texts = [t.text or "" for t in root.iter(f"{SVG_NS}text")]
    assert "demo <&> speed" in texts  # escaped in the file, read back as written
    assert texts.count("context depth: tokens in the prompt before generation (log scale)") == 2
    assert "generation (TG) tok/s" in texts and "prompt processing (PP) tok/s" in texts
    for tick in ("0", "4K", "16K", "64K", "10", "30", "500"):  # x: depths asked; y: tok/s
        assert tick in texts, tick
    for value in ("24.0", "22.9", "19.1", "372", "102"):
        assert value in texts, value
    assert len(list(root.iter(f"{SVG_NS}circle"))) == 2 * len(SWEEP)
    assert len(list(root.iter(f"{SVG_NS}polyline"))) == 2
    assert root.get("width") and root.get("height") and root.get("viewBox")


def test_sweep_svg_places_deeper_points_further_right_and_slower_lower() -> None:
    root = ET.fromstring(chart.sweep_svg(SWEEP, title="t", subtitle="s"))
    circles = list(root.iter(f"{SVG_NS}circle"))[: len(SWEEP)]  # the TG panel
    xs = [float(c.get("cx", "0")) for c in circles]
    ys = [float(c.get("cy", "0")) for c in circles]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert ys[0] < ys[-1]  # 24 tok/s is drawn above 19.1 tok/s (y grows downwards)


def test_sweep_svg_single_point_and_note() -> None:
    svg = chart.sweep_svg(SWEEP[:1], title="t", subtitle="s", note="not measured: 3 depths")
    root = ET.fromstring(svg)
    assert "not measured: 3 depths" in [t.text for t in root.iter(f"{SVG_NS}text")]


@pytest.mark.parametrize(
    ("value", "top", "step"),
    [(24.0 * 1.12, 30.0, 10.0), (372 * 1.12, 500.0, 100.0), (0.9, 1.0, 0.2), (0.0, 1.0, 0.25)],
)
def test_nice_ceiling(value: float, top: float, step: float) -> None:
    assert chart.nice_ceiling(value) == (top, step)


def test_terminal_bars() -> None:
    lines = chart.bars(SWEEP, width=20)
    assert len(lines) == 1 + len(SWEEP)
    assert lines[1].startswith("      0  " + "█" * 20)  # the fastest TG fills the bar
    assert lines[3].rstrip().endswith("372")
    assert all(len(line.rstrip()) <= 80 for line in lines)


def test_replace_keeps_results_comparable() -> None:
    result = _result("x")
    assert replace(result, chart="sweep-x.svg").chart == "sweep-x.svg"
