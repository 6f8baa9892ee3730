"""Predicted vs measured memory: the committed H100 and CPU runs and the seeds' own figures."""

from __future__ import annotations

from pathlib import Path

from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.memory.calibration import Comparison, compare_cpu, compare_h100
from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment

ROOT = Path(__file__).resolve().parent.parent


def print_comparisons(title: str, rows: list[Comparison]) -> int:
    """One line per figure and a summary; return the number of misses."""
    print(f"{'run':5} {'quantity':24} {'predicted':>10} {'measured':>10} {'error':>9}  target")
    for c in rows:
        mark = "ok" if c.within_target else "MISS"
        print(
            f"{c.run:5} {c.quantity:24} {c.predicted:10.1f} {c.measured:10.1f} "
            f"{c.error:+9.1f}  {mark}"
        )
    misses = [c for c in rows if not c.within_target]
    worst = max(rows, key=lambda c: abs(c.error) / max(c.measured, 1.0))
    print(
        f"{len(rows) - len(misses)}/{len(rows)} {title} figures within 2 % or 128 MiB; "
        f"worst relative: {worst.run} {worst.quantity} {worst.error:+.1f} MiB "
        f"({100 * worst.error / max(worst.measured, 1.0):+.1f} %)\n"
    )
    return len(misses)


def main() -> int:
    """Print the tables; exit 1 if any H100 or CPU (upstream, ik) figure misses the target."""
    data = ROOT / "benchmarks" / "data"
    misses = print_comparisons("H100", compare_h100(data / "h100-llama-server.csv"))
    misses += print_comparisons("CPU", compare_cpu(data / "cpu-llama-server.csv"))
    ik_table = data / "cpu-ik-llama-server.csv"
    misses += print_comparisons("CPU ik_llama.cpp", compare_cpu(ik_table, "ik_llama.cpp"))

    catalog = Catalog(ROOT / "profiles")
    env = make_environment(ROOT / "templates")

    def devices(name: str) -> dict[str, float]:
        plan = build_plan(catalog.load(name), env)
        return {d: m.weights / MIB for d, m in plan.memory.devices.items()}

    hybrid = devices("qwen3-coder-next-iq4nl-hybrid")
    gpu = devices("qwen3-coder-next-iq4nl-gpu")
    scout = build_plan(catalog.load("llama4-scout-nvfp4"), env)
    scout_dev = scout.memory.devices["CUDA0"]
    print("seed figures (MiB unless noted)          predicted   seed")
    print(f"002 IQ4_NL exps=CPU  GPU weights        {hybrid['CUDA0']:10.0f}   1403")
    print(f"002 IQ4_NL exps=CPU  CPU expert weights {hybrid['CPU']:10.0f}  41472 (+token_embd)")
    print(f"002 IQ4_NL all-GPU   GPU weights        {gpu['CUDA0']:10.0f}  42875")
    print(f"004 Scout NVFP4 weights (GiB)           {scout_dev.weights / GIB:10.2f}  ~63.5")
    print(f"004 Scout NVFP4 KV pool (GiB)           {scout_dev.kv / GIB:10.2f}  ~20.2")
    print(
        f"004 Scout NVFP4 KV tokens               {scout.memory.facts['kv_pool_tokens']:10,}  ~110,256"
    )
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
