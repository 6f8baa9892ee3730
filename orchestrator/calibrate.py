"""``orch calibrate``: measure a machine's speed constants with the real engine. Effects.

Short, bounded probes with llama-server on synthetic models (``orchestrator.synthetic``):

- **Per-thread decode rate of each weight type** (``[decode.thread_gbs]``): a dense model of
  ~100-370 MB (larger than any L3) in that type, decoded with one thread. The time is the
  process's own CPU time (``/proc/PID/task/*/schedstat``), not the wall clock, so other load on
  the machine does not count: a 72-token minus an 8-token completion, per token.
- **Prefill rate of each type** (``[prefill.thread_gflops]``): the CPU time of a 64-token prompt
  with one thread, in matrix FLOPs per second.
- **Graph-node cost** (``cpu_node_us``): a 32-block model of a few MB, so tiny that its time is
  almost all barriers and dispatch, decoded with all threads (wall clock, best of three).
- **GPU constants** (``gpu_read_efficiency``, ``gpu_node_us``, ``split_us``), when an NVIDIA GPU
  is present: the H100 calibration's MoE model all on the GPU, with ``--cpu-moe`` and with
  ``-ngl 12``, fitted together (``orchestrator.speedfit``).

Every probe has a deadline; the whole run stops starting probes once ``budget_s`` is spent.
The constants are fitted with ``orchestrator.speedfit`` on the same workload model that
``orch plan`` predicts with, so what is measured is exactly what the model charges for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import subprocess
import time
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.engines import LLAMA_SERVERS
from orchestrator.errors import LaunchError, PreflightError
from orchestrator.ggml_types import ggml_type
from orchestrator.health import request, wait_ready
from orchestrator.memory.calibration import synthetic_architecture, synthetic_tensors
from orchestrator.memory.llama import place
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.schema import HardwareProfile
from orchestrator.speed import EngineRun, llama_workload
from orchestrator.speedfit import CPU_NODE, GPU_EFFICIENCY, GPU_NODE, SPLIT, Observation, fit
from orchestrator.synthetic import CALIBRATION_MOE, SyntheticSpec, WeightType, write_gguf

DECODE_SPEC = SyntheticSpec(
    name="orch-calibrate-dense",
    arch="llama",
    n_embd=2048,
    n_layer=4,
    n_head=16,
    n_head_kv=4,
    head_dim=128,
    n_ff=5632,
    ctx_train=4096,
)
"""183 M weights: 103 MB in Q4_0, 366 MB in F16, so decode streams from DRAM."""
NODE_SPEC = SyntheticSpec(
    name="orch-calibrate-nodes",
    arch="llama",
    n_embd=256,
    n_layer=32,
    n_head=4,
    n_head_kv=2,
    head_dim=64,
    n_ff=512,
    ctx_train=4096,
)
"""617 compute nodes around 19 MB of F16 weights: its time is mostly per-node cost."""
DEFAULT_TYPES: tuple[str, ...] = ("f16", "bf16", "q8_0", "q6_k", "q4_k", "iq4_nl", "q4_0")
SHORT, LONG = 8, 72
BYTE_TOKENS = range(3, 3 + 256)
"""Ids of ``<0x00>``..``<0xFF>`` in the synthetic vocabulary (after the three specials)."""
PROMPT_TOKENS = 64
CTX = 1024
LOAD_DEADLINE_S = 120.0
REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Measurement:
    """One probe's result."""

    probe: str
    weight_type: str
    threads: int
    decode_s_per_token: float
    """CPU seconds (one thread) or wall seconds (several) per decoded token."""
    prefill_cpu_s_per_token: float | None = None


@dataclass
class Result:
    """What a calibration measured and the constants it derived."""

    engine: str
    engine_version: str
    measurements: list[Measurement] = field(default_factory=list)
    decode: dict[str, Any] = field(default_factory=dict)
    prefill: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def engine_version(binary: str) -> str:
    """The first line of ``BINARY --version`` (llama-server prints it on stderr)."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise PreflightError(f"{binary}: cannot run it ({exc})") from None
    for line in (done.stdout + done.stderr).splitlines():
        if line.lower().startswith("version"):
            return line.split(":", 1)[-1].strip()
    return "unknown version"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def task_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, from the scheduler's nanosecond counters."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@dataclass
class Server:
    """A llama-server child process on a free port, for probes."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def complete(self, prompt: list[int], n_predict: int) -> tuple[dict[str, Any], float]:
        """One greedy completion; its ``timings`` and the CPU seconds the server spent on it."""
        body = {
            "prompt": prompt,
            "n_predict": n_predict,
            "temperature": 0,
            "ignore_eos": True,
            "cache_prompt": False,
            # random weights pick any token; a lone byte token is invalid UTF-8, which
            # ik_llama.cpp's server answers with HTTP 500
            "logit_bias": [[token, False] for token in BYTE_TOKENS],
        }
        before = task_cpu_seconds(self.process.pid)
        status, data = request(
            self.endpoint, "/completion", method="POST", body=body, timeout=REQUEST_TIMEOUT_S
        )
        spent = task_cpu_seconds(self.process.pid) - before
        if status != 200:
            raise LaunchError(f"probe request answered HTTP {status}: {data[:200]!r}")
        timings: dict[str, Any] = json.loads(data)["timings"]
        return timings, spent


@contextlib.contextmanager
def server(binary: str, model: Path, args: Sequence[str], workdir: Path) -> Iterator[Server]:
    """Start llama-server on ``model`` and stop it (by its pid) when done."""
    port = _free_port()
    log = workdir / f"{model.stem}-{port}.log"
    argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        # in workdir: ik_llama.cpp's server writes llama.log into its working directory
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            endpoint,
            deadline_s=LOAD_DEADLINE_S,
            alive=lambda: process.poll() is None,
            log_tail=lambda n: log.read_text(errors="replace").splitlines()[-n:],
            exit_code=process.poll,
        )
        yield Server(process, endpoint, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _prompt(length: int) -> list[int]:
    return [300 + i % 900 for i in range(length)]


def decode_per_token(srv: Server, *, wall: bool) -> float:
    """Seconds per decoded token: a long minus a short completion (prompt work cancels)."""
    short_t, short_cpu = srv.complete(_prompt(4), SHORT)
    long_t, long_cpu = srv.complete(_prompt(4), LONG)
    if wall:
        return float(long_t["predicted_ms"] - short_t["predicted_ms"]) / 1e3 / (LONG - SHORT)
    return (long_cpu - short_cpu) / (LONG - SHORT)


def prefill_cpu_per_token(srv: Server) -> float:
    """CPU seconds per prompt token of a 64-token prompt (less an 8-token one)."""
    _, short_cpu = srv.complete(_prompt(8), 1)
    _, long_cpu = srv.complete(_prompt(8 + PROMPT_TOKENS), 1)
    return (long_cpu - short_cpu) / PROMPT_TOKENS


def _observation(
    name: str,
    spec: SyntheticSpec,
    args: list[str],
    run: EngineRun,
    seconds: float,
    tensors: list[Tensor] | None = None,
) -> Observation:
    arch = synthetic_architecture(spec)
    tensors = tensors if tensors is not None else synthetic_tensors(spec)
    gpus = tuple(g for g in ("CUDA0",) if "-ngl" in args)
    cfg = LLAMA_SERVERS[run.kind].parse_args(
        args,
        gpus=gpus,
        gpu_vram_mib=(81920,) if gpus else (),
        cuda_context_mib=590,
        moe_layers=list(range(arch.n_layer)) if arch.moe else [],
    )
    placed = place(tensors, arch.n_layer, cfg)
    work = llama_workload(arch, tensors, placed, cfg, run.kind, run.build)
    return Observation(name, work, run, 1.0 / seconds)


def _flops_per_token(tensors: Sequence[Tensor]) -> float:
    return sum(
        2.0 * t.shape[0] * t.shape[1]
        for t in tensors
        if len(t.shape) == 2 and t.kind not in ("token_embd", "output")
    )


def probe_model(
    weight_type: str, workdir: Path, quantize: str | None
) -> tuple[Path, SyntheticSpec, list[Tensor]]:
    """The decode probe model in ``weight_type``: written directly, or quantized from F16."""
    if weight_type in typing.get_args(WeightType):
        spec = dataclasses.replace(DECODE_SPEC, weight_type=typing.cast(WeightType, weight_type))
        path = write_gguf(spec, workdir / f"decode-{weight_type}.gguf")
        return path, spec, synthetic_tensors(spec)
    if not quantize:
        raise PreflightError(
            f"{weight_type}: orch cannot write this type; pass --quantize LLAMA-QUANTIZE"
        )
    source = write_gguf(DECODE_SPEC, workdir / "decode-f16-source.gguf")
    path = workdir / f"decode-{weight_type}.gguf"
    try:
        done = subprocess.run(
            [quantize, str(source), str(path), weight_type.upper()],
            capture_output=True,
            text=True,
            timeout=LOAD_DEADLINE_S * 5,
            check=False,
        )
    finally:
        source.unlink(missing_ok=True)
    if done.returncode != 0 or not path.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise PreflightError(f"{weight_type}: {quantize} failed: {tail[0]}")
    target = ggml_type(weight_type)
    tensors = [
        dataclasses.replace(t, type_name=weight_type, nbytes=target.nbytes(t.shape))
        if len(t.shape) == 2
        else t
        for t in synthetic_tensors(DECODE_SPEC)
    ]
    return path, DECODE_SPEC, tensors


def calibrate_cpu(
    binary: str,
    engine: str,
    hardware: HardwareProfile,
    workdir: Path,
    *,
    types: Sequence[str] = DEFAULT_TYPES,
    quantize: str | None = None,
    budget_s: float = 600.0,
    progress: Callable[[str], None] = lambda _: None,
) -> Result:
    """Measure per-thread decode and prefill rates per type, and the graph-node cost.

    Types orch cannot write (ik_llama.cpp's own, such as ``iq4_kss``) are quantized from an
    F16 probe with ``quantize`` (the engine's ``llama-quantize``).
    """
    start = time.monotonic()
    result = Result(engine, f"{engine_version(binary)} ({binary})")
    threads = hardware.cpu.physical_cores
    one = EngineRun(engine, None, 1, 1)
    observations: list[Observation] = []
    for weight_type in types:
        if time.monotonic() - start > budget_s:
            result.skipped.append(f"{weight_type}: time budget spent")
            continue
        progress(f"{weight_type}: decode and prefill, 1 thread")
        args = ["-t", "1", "-tb", "1", "-c", str(CTX), "-np", "1"]
        model: Path | None = None
        try:
            model, spec, tensors = probe_model(weight_type, workdir, quantize)
            with server(binary, model, args, workdir) as srv:
                decode = decode_per_token(srv, wall=False)
                prefill = prefill_cpu_per_token(srv)
        except (LaunchError, PreflightError, OSError) as exc:
            result.skipped.append(f"{weight_type}: {str(exc).splitlines()[0]}")
            continue
        finally:
            if model is not None:
                model.unlink(missing_ok=True)
        result.measurements.append(Measurement("decode", weight_type, 1, decode, prefill))
        observations.append(_observation(f"decode-{weight_type}", spec, args, one, decode, tensors))
        gflops = _flops_per_token(tensors) / prefill / 1e9
        result.prefill.setdefault("thread_gflops", {}).setdefault(engine, {})[weight_type] = round(
            gflops, 1
        )
    if observations:
        free = [f"thread_gbs:{engine}:{o.name.removeprefix('decode-')}" for o in observations]
        # one thread: nodes cost little (no barrier waits); fix it at 0.3 us and fit the rates
        quiet = hardware.decode.model_copy(update={"cpu_node_us": 0.3, "thread_scale": 1.0})
        single = hardware.model_copy(update={"decode": quiet})
        fitted = fit(observations, single, free, ridge=1e-6)
        rates = {
            k.split(":")[2]: round(v, 2) for k, v in fitted.constants.items() if "thread_gbs" in k
        }
        result.decode["thread_gbs"] = {engine: rates}
        result.decode["thread_scale"] = 1.0
    if time.monotonic() - start <= budget_s:
        progress(f"graph-node cost, {threads} threads")
        result.decode.update(
            _node_cost(binary, engine, hardware, workdir, threads, result, observations)
        )
    else:
        result.skipped.append("graph-node cost: time budget spent")
    return result


def _node_cost(
    binary: str,
    engine: str,
    hardware: HardwareProfile,
    workdir: Path,
    threads: int,
    result: Result,
    observations: list[Observation],
) -> dict[str, float]:
    model = write_gguf(NODE_SPEC, workdir / "nodes-f16.gguf")
    args = ["-t", str(threads), "-c", str(CTX), "-np", "1"]
    try:
        with server(binary, model, args, workdir) as srv:
            best = min(decode_per_token(srv, wall=True) for _ in range(3))
    except (LaunchError, OSError) as exc:
        result.skipped.append(f"graph-node cost: {str(exc).splitlines()[0]}")
        return {}
    finally:
        model.unlink(missing_ok=True)
    result.measurements.append(Measurement("nodes", "f16", threads, best))
    rates = result.decode.get("thread_gbs", {}).get(engine, {})
    measured = hardware.decode.model_copy(
        update={"thread_gbs": {**hardware.decode.thread_gbs, engine: rates}, "thread_scale": 1.0}
    )
    known = hardware.model_copy(update={"decode": measured})
    run = EngineRun(engine, None, threads, threads)
    obs = _observation("nodes", NODE_SPEC, args, run, best)
    return {"cpu_node_us": round(fit([obs], known, [CPU_NODE], ridge=1e-6).constants[CPU_NODE], 2)}


def calibrate_gpu(
    binary: str,
    engine: str,
    hardware: HardwareProfile,
    workdir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, float]:
    """All on the GPU, ``--cpu-moe`` and ``-ngl 12`` on the H100 calibration's MoE model."""
    model = write_gguf(CALIBRATION_MOE, workdir / "gpu-moe.gguf")
    threads = hardware.cpu.physical_cores
    base = ["-t", str(threads), "-c", "4096", "-np", "1", "--fit", "off"]
    placements = {
        "all-gpu": ["-ngl", "99"],
        "cpu-moe": ["-ngl", "99", "--cpu-moe"],
        "ngl-12": ["-ngl", "12"],
    }
    observations: list[Observation] = []
    run = EngineRun(engine, None, threads, threads)
    try:
        for name, extra in placements.items():
            progress(f"GPU probe {name}")
            args = [*base, *extra]
            with server(binary, model, args, workdir) as srv:
                seconds = min(decode_per_token(srv, wall=True) for _ in range(2))
            observations.append(_observation(name, CALIBRATION_MOE, args, run, seconds))
    finally:
        model.unlink(missing_ok=True)
    free = [GPU_EFFICIENCY, GPU_NODE, SPLIT]
    fitted = fit(observations, hardware, free, ridge=1e-3)
    return {k: round(v, 3) for k, v in fitted.constants.items()}


# ---------------------------------------------------------------- writing the profile


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, nested tables merged key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def render_table(name: str, values: Mapping[str, Any], comments: Mapping[str, str]) -> str:
    """One TOML table (and its sub-tables) rendered by tomli-w, a comment after any key.

    ``comments`` is keyed by dotted key below the table: ``gpu_node_us``,
    ``thread_gbs.llama.cpp.f16``.
    """
    lines = [f"[{name}]"]
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested[key] = value
            continue
        line = tomli_w.dumps({key: value}).strip()
        note = comments.get(key)
        lines.append(f"{line}  # {note}" if note else line)
    for key, value in nested.items():
        for engine, rates in value.items():
            header = tomli_w.dumps({name: {key: {engine: {}}}}).strip().splitlines()[-1]
            lines += ["", header]
            for type_name, rate in rates.items():
                line = tomli_w.dumps({type_name: rate}).strip()
                note = comments.get(f"{key}.{engine}.{type_name}")
                lines.append(f"{line}  # {note}" if note else line)
    return "\n".join(lines) + "\n"


def replace_tables(
    text: str,
    tables: Mapping[str, Mapping[str, Any]],
    header: Sequence[str],
    comments: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The TOML ``text`` with these top-level tables (and their sub-tables) rewritten.

    Other tables and their comments are kept; the comment block directly above a replaced
    table goes with it. The new tables are appended under ``header``, each value with its
    comment from ``comments[table][dotted key]``.
    """
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            name = stripped.strip("[]").split(".")[0].strip().strip('"')
            skipping = name in tables
            if skipping:
                while out and out[-1].lstrip().startswith("#"):
                    out.pop()
        elif stripped.startswith("[["):
            skipping = False
        if not skipping:
            out.append(line)
    body = "\n".join(out).rstrip() + "\n\n"
    body += "".join(f"# {line}\n" for line in header)
    notes = comments or {}
    return body + "\n".join(render_table(k, v, notes.get(k, {})) for k, v in tables.items())


def calibrated_source(old: str, engine: str, version: str, day: date) -> str:
    """``orch calibrate DATE: ENGINE VERSION; ...``: the latest run of each engine."""
    prefix = "orch calibrate "
    entries = (
        [e.strip() for e in old.removeprefix(prefix).split(";")] if old.startswith(prefix) else []
    )
    entries = [e for e in entries if e and not e.split(": ", 1)[-1].startswith(f"{engine} ")]
    return prefix + "; ".join([*entries, f"{day.isoformat()}: {engine} {version}"])


def write_profile(path: Path, result: Result, extra_header: Sequence[str] = ()) -> str:
    """Write the measured constants into the hardware profile at ``path``; return the text."""
    text = path.read_text()
    data = tomllib.loads(text)
    old = str(data.get("decode", {}).get("source", ""))
    source = calibrated_source(old, result.engine, result.engine_version, date.today())
    decode = merge(data.get("decode", {}), {**result.decode, "source": source})
    prefill = merge(data.get("prefill", {}), {**result.prefill, "source": source})
    header = [
        f"Speed constants: {source}.",
        "thread_gbs / thread_gflops: one thread, CPU time, synthetic dense model per type;",
        "cpu_node_us: all threads, wall clock, a 32-block model of a few MB. Other values: as",
        "they were (see git history for their sources).",
        *extra_header,
    ]
    new = replace_tables(text, {"decode": decode, "prefill": prefill}, header)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    tmp.replace(path)
    return new
