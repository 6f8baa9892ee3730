"""How long `orch plan --dry-run` over every shipped profile takes (in-process and as a CLI)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5


def main() -> int:
    """Print min/median of both timings."""
    catalog = Catalog(ROOT / "profiles")
    names = catalog.model_names()
    inproc = []
    for _ in range(RUNS):
        start = time.perf_counter()
        env = make_environment(ROOT / "templates")
        for name in names:
            build_plan(catalog.load(name), env)
        inproc.append(time.perf_counter() - start)
    cli = []
    orch = [sys.executable, "-m", "orchestrator", "plan", "--dry-run", "--json"]
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(orch, cwd=ROOT, check=True, capture_output=True)
        cli.append(time.perf_counter() - start)
    print(f"{len(names)} profiles, {RUNS} runs each")
    print(
        f"in-process plan of all: min {min(inproc) * 1000:.0f} ms, median {statistics.median(inproc) * 1000:.0f} ms"
    )
    print(
        f"`orch plan --dry-run --json` (whole process): min {min(cli) * 1000:.0f} ms, median {statistics.median(cli) * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
