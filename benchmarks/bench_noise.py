"""How noisy `orch bench demo` is on this machine: the figures `--threshold` rests on.

Starts the shipped demo profile (on the demo model, a llama-server binary and a free port,
in a private state folder), runs `orch bench demo` BENCHES times with nothing changed, and
prints:

- within a bench: the coefficient of variation of TG and PP over the steady state;
- between benches: each bench's mean TG and PP, and the change from one bench to the next;
- what --compare would say of each consecutive pair of these identical benches, at
  threshold 0 (so every significant change shows): the largest significant change is the
  smallest --threshold at which none of them would have been called a regression.

    .venv/bin/python -m benchmarks.bench_noise                  # 10 benches of 8 runs
    .venv/bin/python -m benchmarks.bench_noise --benches 6 --runs 8 --keep /tmp/noise
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.bench import ledger, stats
from orchestrator.bench.ledger import BenchResult

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = Path.home() / ".cache" / "orch" / "models" / "tiny-dense.gguf"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _orch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def _setup(root: Path, server: str, model: Path) -> dict[str, str]:
    profiles = root / "profiles"
    shutil.copytree(ROOT / "profiles", profiles)
    demo = profiles / "models" / "demo.toml"
    text = demo.read_text().replace(
        'path = "~/.cache/orch/models/tiny-dense.gguf"', f'path = "{model}"'
    )
    text = text.replace('kind = "llama.cpp"', f'kind = "llama.cpp"\nbinary = "{server}"')
    demo.write_text(re.sub(r"(?m)^port = \d+$", f"port = {_free_port()}", text))
    return {
        **os.environ,
        "ORCH_PROFILES_DIR": str(profiles),
        "ORCH_TEMPLATES_DIR": str(ROOT / "templates"),
        "ORCH_STATE_DIR": str(root / "state"),
        "ORCH_CONFIG": str(root / "no-orch.toml"),
    }


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def report(results: list[BenchResult]) -> None:
    """Print the noise figures of identical benches."""
    print(
        f"{len(results)} identical benches of {len(results[0].runs)} runs, "
        f"{results[0].max_tokens} tokens generated each, engine {results[0].engine_build}"
    )
    print(
        f"{'#':>3}  {'load':>9}  {'steady':>6}  {'TG mean':>8}  {'TG cv':>6}  "
        f"{'PP mean':>8}  {'PP cv':>6}"
    )
    for i, r in enumerate(results, start=1):
        s = r.summary()
        load = "/".join(f"{x:.1f}" for x in r.host_load)
        print(
            f"{i:>3}  {load:>9}  {s['tg_tps'].n:>3}/{len(r.runs):<2}  {s['tg_tps'].mean:>8.1f}  "
            f"{s['tg_tps'].cv:>6.1%}  {s['pp_tps'].mean:>8.1f}  {s['pp_tps'].cv:>6.1%}"
        )
    for key, label in (("tg_tps", "TG"), ("pp_tps", "PP")):
        cvs = [r.summary()[key].cv for r in results]
        means = [r.summary()[key].mean for r in results]
        steps = [b / a - 1 for a, b in zip(means, means[1:], strict=False)]
        print(
            f"{label}: within-bench cv median {statistics.median(cvs):.1%} "
            f"(range {min(cvs):.1%}-{max(cvs):.1%}); bench-to-bench mean "
            f"{statistics.fmean(means):.1f}, cv {statistics.stdev(means) / statistics.fmean(means):.1%}; "
            f"consecutive change median |{statistics.median(abs(x) for x in steps):.1%}|, "
            f"largest {max(steps, key=abs):+.1%}"
        )
    print(
        "--compare of consecutive identical benches (paired t, 95 %): the change and its "
        "interval; the verdict at the 5 % floor; the threshold measured from the benches "
        "before it (as --compare does from the ledger) and the verdict at that threshold"
    )
    counts = {"floor": 0, "measured": 0, "significant": 0, "pairs": 0}
    for i, (a, b) in enumerate(zip(results, results[1:], strict=False)):
        for key, label in (("tg_tps", "TG"), ("pp_tps", "PP")):
            start = max(a.steady_from, b.steady_from)
            ra = [getattr(r, key) for r in a.runs[start:]]
            rb = [getattr(r, key) for r in b.runs[start:]]
            at_floor = stats.compare(label, ra, rb, paired=True, threshold=stats.THRESHOLD_FLOOR)
            history = [r.summary()[key].mean for r in results[: i + 1]]
            threshold, sigma = stats.noise_threshold(history)
            measured = stats.compare(label, ra, rb, paired=True, threshold=threshold)
            counts["pairs"] += 1
            counts["significant"] += at_floor.high is not None and (
                at_floor.high < 0 or (at_floor.low or 0) > 0
            )
            counts["floor"] += at_floor.verdict == "regression"
            counts["measured"] += measured.verdict == "regression"
            interval = (
                f"{_pct(at_floor.low)} .. {_pct(at_floor.high)}"
                if at_floor.low is not None and at_floor.high is not None
                else "-"
            )
            basis = f"{threshold:.0%} (from {len(history)})" if sigma is not None else "5% floor"
            print(
                f"  {i + 1:>2}->{i + 2:<2} {label}: {_pct(at_floor.change):>8}  [{interval:>19}]  "
                f"{at_floor.verdict:<21}  {basis:>16}  {measured.verdict}"
            )
    print(
        f"of {counts['pairs']} comparisons of identical benches: {counts['significant']} "
        f"significant at 95 %, {counts['floor']} called a regression at the 5 % floor, "
        f"{counts['measured']} at the threshold measured from the benches before"
    )


def main() -> int:
    """Run the benches (or read a kept ledger) and print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_noise",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--benches", type=int, default=10)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--server", default=shutil.which("llama-server") or "llama-server")
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument(
        "--keep", type=Path, help="work here and keep the ledger (default: a temp dir)"
    )
    parser.add_argument("--ledger", type=Path, help="only report on this ledger; run nothing")
    args = parser.parse_args()
    if args.ledger:
        report(list(ledger.read(args.ledger).results))
        return 0
    if not args.model.is_file():
        print(f"no demo model at {args.model} (make demo-model)", file=sys.stderr)
        return 4
    root = args.keep or Path(tempfile.mkdtemp(prefix="orch-bench-noise-"))
    root.mkdir(parents=True, exist_ok=True)
    env = _setup(root, args.server, args.model)
    up = _orch(env, "up", "demo")
    if up.returncode != 0:
        print(up.stdout + up.stderr, file=sys.stderr)
        return up.returncode
    started = time.monotonic()
    try:
        for i in range(args.benches):
            done = _orch(env, "bench", "demo", "--runs", str(args.runs), "--json")
            if done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
                return done.returncode
            result = json.loads(done.stdout)
            print(f"# bench {i + 1}/{args.benches}: {result['id']}", file=sys.stderr, flush=True)
    finally:
        _orch(env, "down", "demo")
    path = root / "state" / "bench" / "demo" / ledger.LEDGER_FILE
    report(list(ledger.read(path).results))
    print(
        f"# {args.benches} benches in {time.monotonic() - started:.0f} s; ledger {path}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
