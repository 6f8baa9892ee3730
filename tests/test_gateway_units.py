"""`orch systemd --serve`, load progress and its display: no engines needed."""

from __future__ import annotations

import io
import mmap
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.cli import main
from orchestrator.cli.lifecycle import UpView, progress_text
from orchestrator.lifecycle import Event
from orchestrator.notify import Notifier
from orchestrator.progress import Meter, _rchar, _weights_rss, bytes_loaded
from tests.conftest import PROFILES, TEMPLATES

MIB = 2**20


def test_serve_unit_verifies_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "orch.toml"
    config.write_text('[serve]\nport = 8123\npinned = ["demo"]\n')
    monkeypatch.setenv("ORCH_CONFIG", str(config))
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(PROFILES))
    monkeypatch.setenv("ORCH_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))
    orch = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "orch"
    unit = tmp_path / "orch-serve.service"
    code = main(
        ["systemd", "--serve", "demo", "--orch-path", str(orch.absolute()), "--output", str(unit)]
    )
    assert code == 0, capsys.readouterr()
    text = unit.read_text()
    assert "Type=notify" in text
    assert f"ExecStart={orch.absolute()} serve demo --port 8123" in text
    assert "# start: pinned demo " in text
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done


def test_meter_rate_and_eta() -> None:
    meter = Meter(1000 * MIB, window_s=5)
    first = meter.sample(0, 0.0)
    assert first.rate_bytes_s is None and first.eta_s is None
    meter.sample(100 * MIB, 1.0)
    p = meter.sample(200 * MIB, 2.0)
    assert p.rate_bytes_s == pytest.approx(100 * MIB)
    assert p.eta_s == pytest.approx(8.0)
    assert p.fraction == pytest.approx(0.2)
    for t in range(3, 12):
        p = meter.sample(200 * MIB + (t - 2) * 50 * MIB, float(t))
    assert p.rate_bytes_s == pytest.approx(50 * MIB)  # only the last 5 s count
    done = meter.sample(2000 * MIB, 12.0)  # more than planned: capped
    assert done.fraction == 1.0 and done.eta_s == 0.0


def test_bytes_loaded_reads_proc_of_this_process(tmp_path: Path) -> None:
    before = _rchar(os.getpid())
    (tmp_path / "x").write_bytes(b"x" * (4 * MIB))
    assert len((tmp_path / "x").read_bytes()) == 4 * MIB
    after = _rchar(os.getpid())
    assert after >= before + 4 * MIB  # read() counts
    assert bytes_loaded([os.getpid()]) >= after  # both figures only grow here


def test_mapped_weights_count_and_nothing_else_mapped_does(tmp_path: Path) -> None:
    weights, other = tmp_path / "m.gguf", tmp_path / "m.data"
    for path in (weights, other):
        path.write_bytes(os.urandom(3 * MIB))
    assert _weights_rss(os.getpid()) == 0  # this process's binary and libraries do not count
    with weights.open("rb") as w, other.open("rb") as o:
        wmap = mmap.mmap(w.fileno(), 0, access=mmap.ACCESS_READ)
        omap = mmap.mmap(o.fileno(), 0, access=mmap.ACCESS_READ)
        assert sum(omap[i] for i in range(0, 3 * MIB, 4096)) >= 0  # touched: resident
        assert _weights_rss(os.getpid()) == 0
        assert sum(wmap[i] for i in range(0, 2 * MIB, 4096)) >= 0  # two thirds read
        assert 2 * MIB <= _weights_rss(os.getpid()) < 3 * MIB
        wmap.close()
        omap.close()


def _view(live: bool) -> tuple[UpView, io.StringIO, list[str]]:
    out = io.StringIO()
    sent: list[str] = []
    notifier = Notifier(None)
    notifier._send = sent.append  # type: ignore[method-assign,assignment]
    view = UpView(Console(file=out, width=200), notifier, live=live, plain_every_s=5)
    return view, out, sent


def test_plain_progress_lines_and_systemd_extension() -> None:
    view, out, sent = _view(live=False)
    meter = Meter(100 * MIB)
    for t in range(0, 12):
        view.event(Event("m", "loading", "loading", progress=meter.sample(t * 8 * MIB, float(t))))
    view.event(Event("m", "ready", "ready in 12.00 s", seconds=12))
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:-1]] == [
        "m: loading weights 0 MiB/100 MiB",
        "m: loading weights 40 MiB/100 MiB",
        "m: loading weights 80 MiB/100 MiB",
    ]
    assert "8 MiB/s, ETA 8 s" in lines[1]
    assert lines[-1] == "m: ready in 12.00 s"
    assert sent.count("EXTEND_TIMEOUT_USEC=60000000") == 11  # every sample that made progress
    assert any(s.startswith("STATUS=m: loading weights 88 MiB/100 MiB") for s in sent)


def test_live_bar_redraws_one_line() -> None:
    view, out, _ = _view(live=True)
    meter = Meter(100 * MIB)
    view.event(Event("m", "loading", "", progress=meter.sample(50 * MIB, 1.0)))
    view.event(Event("m", "ready", "ready in 1.00 s"))
    text = out.getvalue()
    assert text.startswith("\rm: loading [############------------] 50 MiB/100 MiB (50%)")
    assert text.endswith("\nm: ready in 1.00 s\n")
    assert progress_text(meter.sample(100 * MIB, 2.0)) == "100 MiB/100 MiB (100%), 50 MiB/s"
