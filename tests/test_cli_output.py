"""What the CLI prints: tables within 80 columns (or one line per row), orch estimate's budget.

Issue 11, "Also": a piped `make demo` log is 80 columns wide; `orch estimate --hardware`
exits 3 over budget and fills its budget and fits columns; GPU flags without --hardware are
not ignored silently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.synthetic import TINY_MOE, write_gguf
from tests.conftest import PROFILES, TEMPLATES


def orch(
    *args: str, columns: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``orch`` with its stdout a pipe, as in a `make demo` log, at ``columns`` columns."""
    full = {
        **os.environ,
        "COLUMNS": str(columns),
        "ORCH_PROFILES_DIR": str(PROFILES),
        "ORCH_TEMPLATES_DIR": str(TEMPLATES),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def tables(text: str) -> list[list[str]]:
    """The memory tables of a plan or estimate: title, header, rule and rows, line by line."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if re.fullmatch(r"(memory|estimate) \((GiB|MiB)\)", line):
            end = i + 1
            while end < len(lines) and lines[end] and not lines[end].startswith("  note:"):
                end += 1
            found.append(lines[i:end])
    return found


MEMORY_HEADER = ["device", "weights", "kv", "compute", "overhead", "total", "budget", "fits"]


def test_every_plan_table_fits_80_columns() -> None:
    done = orch("plan", "--dry-run", columns=80)
    assert done.returncode in (0, 3), done.stderr
    found = tables(done.stdout)
    assert len(found) == len(list((PROFILES / "models").glob("[!_]*.toml")))
    widest = 0
    for table in found:
        assert table[1].split() == MEMORY_HEADER, table
        assert set(table[2]) == {"─"}, table
        for row in table[3:]:
            cells = row.split()
            assert re.fullmatch(r"CPU|CUDA\d", cells[0]) and len(cells) in (8, 9), row  # "NO +x.xx"
        widest = max(widest, *(len(line) for line in table))
    assert widest <= 80
    print(f"\n[measured] widest plan table: {widest} columns")


def test_a_narrow_terminal_gets_one_line_per_device() -> None:
    done = orch("plan", "--dry-run", "qwen35-397b-iq4-2gpu", columns=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("memory (GiB)")
    rows = lines[start + 1 : start + 4]
    assert [r.split(":")[0] for r in rows] == ["  CUDA0", "  CUDA1", "  CPU"]
    for row in rows:
        assert re.fullmatch(
            r"  \w+: weights [\d.]+, kv [\d.]+, compute [\d.]+, overhead [\d.]+, total [\d.]+, "
            r"budget [\d.]+, fits yes",
            row,
        ), row


@pytest.fixture(scope="module")
def moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(TINY_MOE, tmp_path_factory.mktemp("est") / "moe.gguf")


ESTIMATES = [
    # (what, hardware, args, exit, fits column, note about GPUs)
    ("fits", "epyc9175f-rtxpro6000", ["-c", "4096", "-ngl", "99"], 0, ["yes", "yes"], None),
    ("CPU only, fits", "small-cpu", ["-c", "4096"], 0, ["yes"], None),
    ("over budget", "small-cpu", ["--cache-ram", "40000"], 3, ["NO"], None),
    ("no hardware, -ngl 99", None, ["-ngl", "99"], 0, ["-"], "-ngl"),
    # (-ot exps=CUDA0 without --hardware is an error: tests/test_hostile_types.py)
    (
        "no hardware, several",
        None,
        ["-ngl", "99", "--cpu-moe", "-mg", "0"],
        0,
        ["-"],
        "-ngl, --cpu-moe, -mg",
    ),
    (
        "no hardware, --n-gpu-layers=5",
        None,
        ["--n-gpu-layers=5", "-ts", "1,1"],
        0,
        ["-"],
        "--n-gpu-layers, -ts",
    ),
    ("no hardware, -ngl 0", None, ["-ngl", "0", "-ot", "exps=CPU"], 0, ["-"], None),
]


@pytest.mark.parametrize(
    ("hardware", "args", "code", "fits", "gpu_note"),
    [e[1:] for e in ESTIMATES],
    ids=[e[0] for e in ESTIMATES],
)
def test_estimate_budget_and_notes(
    moe_gguf: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    hardware: str | None,
    args: list[str],
    code: int,
    fits: list[str],
    gpu_note: str | None,
) -> None:
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(PROFILES))
    words = ["estimate", str(moe_gguf)] + (["--hardware", hardware] if hardware else [])
    assert main([*words, "--", *args]) == code
    out, err = capsys.readouterr()
    (table,) = tables(out)
    assert [row.split()[7] for row in table[3:]] == fits
    if hardware is None:
        assert all(row.split()[6] == "-" for row in table[3:])
    else:
        assert all(re.fullmatch(r"[\d.]+", row.split()[6]) for row in table[3:])
    note = [line for line in out.splitlines() if "no GPU assumed" in line]
    if gpu_note is None:
        assert note == []
    else:
        assert note == [
            f"  note: no GPU assumed (no --hardware): {gpu_note} had no effect, everything is "
            "counted on the CPU; pass --hardware NAME to use its GPUs"
        ]
    if code == 3:
        assert re.fullmatch(
            rf"orch: error: {re.escape(str(moe_gguf))}: does not fit hardware {hardware}:\n"
            r"  CPU: needs [\d.]+ GiB, budget 22.00 GiB \(over by [\d.]+ GiB\)\n",
            err,
        ), err
    else:
        assert err == ""
    assert main([*words, "--json", "--", *args]) == code
    data = json.loads(capsys.readouterr().out)
    assert [b["fits"] for b in data["budget"]] == [f == "yes" for f in fits if f != "-"]
    assert any("no GPU assumed" in n for n in data["notes"]) == (gpu_note is not None)


ESTIMATE_ERRORS = [
    (
        "-ngl abc",
        ["-ngl", "abc"],
        "orch: error: --n-gpu-layers: expected an integer, got 'abc'\n",
    ),
    (
        "--n-cpu-moe x",
        ["--n-cpu-moe", "x"],
        "orch: error: --n-cpu-moe: expected an integer, got 'x'\n",
    ),
    (
        "-ts a,b",
        ["-ts", "a,b"],
        "orch: error: --tensor-split: expected numbers, got 'a'\n",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), [e[1:] for e in ESTIMATE_ERRORS], ids=[e[0] for e in ESTIMATE_ERRORS]
)
def test_estimate_bad_numbers(
    moe_gguf: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["estimate", str(moe_gguf), "--", *args]) == 2
    assert capsys.readouterr() == ("", message)


def test_ps_with_long_names_stays_within_80_columns(tmp_path: Path) -> None:
    run = tmp_path / "state" / "run"
    run.mkdir(parents=True)
    names = ["a" * 64, "qwen3-coder-next-iq4nl-hybrid"]
    for name in names:
        record = {
            "name": name,
            "runtime": "process",
            "plan_hash": "0123456789ab",
            "endpoint": "http://127.0.0.1:9",
            "port": 18181,
            "started_at": time.time(),
            "log_path": "",
            "pid": 999999,
            "pid_create_time": 1.0,
        }
        (run / f"{name}.json").write_text(json.dumps(record))
    done = orch("ps", columns=80, env={"ORCH_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"  {name}: runtime process, state not running, pid/container 999999, port 18181, "
        "uptime -, started by orch up"
        for name in sorted(names)
    ]
    short = tmp_path / "short"
    (short / "run").mkdir(parents=True)
    (short / "run" / "demo.json").write_text(
        (run / f"{names[1]}.json").read_text().replace(names[1], "demo")
    )
    done = orch("ps", columns=80, env={"ORCH_STATE_DIR": str(short)})
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "name",
        "runtime",
        "state",
        "pid/container",
        "port",
        "uptime",
        "started",
        "by",
    ]
    assert lines[2].split() == [
        "demo",
        "process",
        "not",
        "running",
        "999999",
        "18181",
        "-",
        "orch",
        "up",
    ]
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize("width", [80, 15])
def test_tables_escape_control_characters_both_ways(width: int) -> None:
    # the console every command prints through escapes what it renders: a table's cells when
    # it fits, the one-line-per-row form when it does not
    import io

    from orchestrator.cli.output import SafeConsole
    from orchestrator.cli.tables import plain_table, print_table

    out = io.StringIO()
    console = SafeConsole(file=out, width=width, highlight=False, soft_wrap=True)
    table = plain_table("t\x1b]0;title\x07", ("name", "value"))
    rows = [["a\x1b[2Jb", "1\r2"]]
    table.add_row(*rows[0])
    print_table(console, table, rows)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "a\\x1b[2Jb" in text and "1\\x0d2" in text
    assert ("name" in text) == (width == 80)  # the table itself, or a line per row
