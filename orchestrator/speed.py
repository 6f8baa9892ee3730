"""Decode and prefill speed of one placement: a physical model with measured constants. Pure.

llama-server computes a token layer by layer, so the devices take turns and their times add.

Decode, one token:

- **A GPU** reads the weights it holds (of an expert tensor, ``n_expert_used / n_expert``) and
  its KV cache up to the current depth, at ``gpu_read_efficiency`` x its spec bandwidth, and
  pays ``gpu_node_us`` for each node of the graph it runs (kernel launches and their tails).
- **The host** streams its weights through the CPU kernels: each decode thread reads
  ``thread_gbs[engine][type]`` GB/s, so ``threads`` of them read ``threads x`` that, up to
  ``host_read_efficiency`` x the memory bandwidth of the NUMA nodes the process may use. Each
  graph node costs ``cpu_node_us`` (every node ends in a barrier of all threads).
- **Every switch between devices** (a graph split) costs ``split_us`` (a copy and a stream
  synchronisation) plus the activations over the link.
- **Gated DeltaNet layers** (Qwen3-Next, Qwen3.5) also read and write their recurrent state.
  Upstream builds before the fused ``GATED_DELTA_NET`` op run its update on the CPU as about
  20 small ops, some single-threaded (``sum_rows``, ``repeat``): ``UNFUSED_GDN_CPU_CYCLES`` per
  layer, measured from a public report (see the constant).

Prefill is compute-bound: each ubatch of ``u`` tokens does ``2 u`` FLOPs per active weight. A GPU
runs them at ``gpu_flops_efficiency`` x its spec FLOPs; the host at ``threads_batch x
thread_gflops[engine][type]``. With a GPU present, llama.cpp computes ubatches of at least 32
tokens on the GPU even for weights kept in host RAM, copying those weights over the link for
every ubatch (``OP_OFFLOAD_MIN_BATCH``): then the link, not the CPU, sets the pace.

The constants live in the hardware profile's ``[decode]`` and ``[prefill]`` tables, measured by
``orch calibrate`` or taken from the sources their comments name. The graph facts below were
read from llama-server itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.engines import (
    FUSED_GDN_SINCE_BUILD,
    EngineCaps,
    adapter_for,
    adapter_for_kind,
    build_number,
    llama_settings,
    vllm_settings,
)
from orchestrator.ggml_types import ggml_type
from orchestrator.memory.llama import CPU, OP_OFFLOAD_MIN_BATCH, LlamaConfig, Placement, place
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import Architecture, HardwareProfile
from orchestrator.sizing import gpus_for, llama_config_for

# ---------------------------------------------------------------- graph facts (per token)

GRAPH_BASE_NODES = 9
"""Compute nodes (views, reshapes and permutes excluded: no backend runs them) outside the
blocks: input lookups, output norm and matrix. Counted by llama-server b11434 itself
(``GGML_SCHED_DEBUG=2 llama-server -v``, decode graph) on synthetic models here: a llama with 2
and 4 blocks has 47 and 85, a qwen3moe (2 of 8 experts used) with 2 and 4 blocks 73 and 137,
so ``9 + 19 n`` and ``9 + 32 n``."""
ATTENTION_NODES = 12
"""A llama block's 19: attention 12 (norm, mul, q/k/v, 2 rope, 2 KV writes, flash attention,
output, add) and a dense FFN 7 (norm, mul, gate, up, swiglu, down, add)."""
QK_NORM_NODES = 4
"""Qwen3-family attention normalises q and k (rms_norm and mul each): a qwen3moe block's
attention is 16."""
GATED_ATTENTION_NODES = 2
"""Qwen3-Next / Qwen3.5 full attention gates its output (sigmoid, mul)."""
DENSE_FFN_NODES = 7
MOE_BASE_NODES = 14
"""A qwen3moe block's MoE is ``14 + n_expert_used`` nodes (norm, mul, router, softmax, argsort,
get_rows, sum_rows, clamp, div, three ``mul_mat_id``, swiglu, weighting mul, residual add, and
one add per expert after the first)."""
MOE_NODES_PER_EXPERT = 1
EXPERT_NODES = 4
"""Of those, the nodes that run where the expert tensors are: three ``mul_mat_id``, swiglu,
the weighting mul, and the adds (``4 + n_expert_used``); the router part stays with the block."""
IK_EXPERT_NODES = 3
"""ik_llama.cpp fuses a MoE's up and gate (``ggml_moe_up_gate``, ``-fmoe``, on by default) and
the weighting with the sum (``ggml_mul_multi_add``, ``fused_mmad``, on by default): three nodes
on the experts' device whatever ``n_expert_used`` (``src/llama-build-context.cpp``, 0.1.5)."""
IK_MOE_NODES = 12
"""ik_llama.cpp's whole MoE block: norm, mul, router, softmax, top-k, weights, their
normalisation (sum_rows, div), the three expert nodes and the residual add."""
SHARED_EXPERT_NODES = 8
"""Shared expert: its gate, up, swiglu, down, gate input, sigmoid, mul and add."""
DELTANET_NODES_UNFUSED = 42
DELTANET_NODES_FUSED = 30
"""A Gated DeltaNet layer (``src/models/qwen3next.cpp``, ``delta-net-base.cpp`` in b11434):
about 30 compute nodes with the fused ``ggml_gated_delta_net``; the unfused update
(``build_delta_net_autoregressive``: scale, exp, 4 mul, 2 sum_rows, sub, repeat, add) adds 12."""
UNFUSED_GDN_CPU_CYCLES = 11.0e6
"""CPU cycles one unfused Gated DeltaNet layer of Qwen3-Next (32 x 128 x 128 state) costs per
token beyond its weights. From llama.cpp issue #19480 (build 7973, Zen 5 Ryzen AI 9 HX PRO 370,
12 threads, 4.37 GHz): Qwen3-Coder-Next Q4_K_M decodes at 7.74 tok/s (129.2 ms) where a dense
32B Q4_K_M shows the machine reads 67 GB/s; its ~2.27 GB per token take 33.7 ms, and about
5 ms go to the other ~1,750 nodes, leaving 90.5 ms / 36 layers = 2.5 ms = 11.0 M cycles. Scaled
by the state size for other shapes. ik_llama.cpp has its own CPU delta-net and no such cost."""
GDN_REFERENCE_STATE = 32 * 128 * 128

VLLM_KERNELS_PER_LAYER = 20
"""vLLM's CUDA graph runs about 20 kernels per decoder layer (norms, QKV/O GEMMs, rope,
attention, gate/up/down GEMMs, activation, and for MoE the router, top-k and fused-MoE)."""

F32 = 4
PREFILL_PROMPT = 2048
"""Prompt length (tokens) of the reported prefill rate: one llama-server batch by default."""


# ---------------------------------------------------------------- the workload


@dataclass
class DeviceWork:
    """What one token asks of one device."""

    weights: dict[str, float] = field(default_factory=dict)
    """Weight bytes read per decoded token, by ggml type."""
    kv_layers: list[tuple[int, float]] = field(default_factory=list)
    """Per attention layer: the most cells it reads (its window, or none) and bytes per cell."""
    kv_type: str = "f16"
    state_bytes: float = 0.0
    """Recurrent state read and written per token (Gated DeltaNet layers)."""
    nodes: float = 0.0
    unfused_gdn_cycles: float = 0.0
    """Single-threaded cycles of unfused Gated DeltaNet updates (host only)."""
    flops: dict[str, float] = field(default_factory=dict)
    """Matrix FLOPs per prompt token, by weight type."""
    attention_flops_per_depth: float = 0.0
    """Attention FLOPs per prompt token and per token of context before it."""
    matrix_bytes: dict[str, float] = field(default_factory=dict)
    """Bytes of every weight matrix (all experts), by type: what a ubatch may touch."""
    expert_bytes: float = 0.0
    """Of ``matrix_bytes``, expert tensors (a short ubatch touches only some experts)."""


@dataclass(frozen=True)
class Workload:
    """Per-token work of one placement, device by device."""

    devices: Mapping[str, DeviceWork]
    splits: int
    """Graph splits of the decode graph (llama.cpp's ``graph splits``): runs of one device."""
    split_bytes: int
    n_expert_used: int = 0
    n_expert: int = 0


@dataclass(frozen=True)
class EngineRun:
    """The speed-relevant settings of one engine command line."""

    kind: str
    build: int | None
    threads: int
    threads_batch: int
    batch: int = 2048
    ubatch: int = 512
    host_gbs: float = 0.0
    """Read rate cap of the host memory the process may use (0: none known)."""


def _state_elements(arch: Architecture) -> int:
    la = arch.linear_attention
    if la is None:
        return 0
    return la.n_value_heads * la.key_head_dim * la.value_head_dim


def _attention_nodes(arch: Architecture) -> int:
    nodes = ATTENTION_NODES
    if arch.gguf_arch.startswith("qwen3"):
        nodes += QK_NORM_NODES
    if arch.linear_attention is not None:
        nodes += GATED_ATTENTION_NODES
    return nodes


def _caps(kind: str, build: int | None) -> EngineCaps:
    """The graph-relevant capabilities of engine ``kind`` at ``build`` (None: the newest)."""
    return adapter_for_kind(kind).caps("latest" if build is None else str(build))


def _elements(tensor: Tensor) -> int:
    count = 1
    for dim in tensor.shape:
        count *= dim
    return count


def llama_workload(
    arch: Architecture,
    tensors: Sequence[Tensor],
    placement: Placement,
    cfg: LlamaConfig,
    kind: str,
    build: int | None,
) -> Workload:
    """What one token asks of each device under this placement."""
    moe = arch.moe
    share = moe.n_expert_used / moe.n_expert if moe else 1.0
    devices: dict[str, DeviceWork] = {}

    def on(device: str) -> DeviceWork:
        work = devices.get(device)
        if work is None:
            work = devices[device] = DeviceWork()
        return work

    expert_device: dict[int, str] = {}
    for tensor in tensors:
        device = placement.tensor_device[tensor.name]
        work = on(device)
        type_name = tensor.type_name.lower()
        kind_ = tensor.kind
        if kind_ == "token_embd":
            read = tensor.nbytes / max(tensor.shape[-1] if len(tensor.shape) > 1 else 1, 1)
        elif kind_ == "ffn_exps":
            read = tensor.nbytes * share
            if tensor.layer is not None:
                expert_device[tensor.layer] = device
        else:
            read = float(tensor.nbytes)
        work.weights[type_name] = work.weights.get(type_name, 0.0) + read
        if len(tensor.shape) >= 2 and kind_ not in ("token_embd", "output"):
            elements = _elements(tensor) * (share if kind_ == "ffn_exps" else 1.0)
            work.flops[type_name] = work.flops.get(type_name, 0.0) + 2.0 * elements
            work.matrix_bytes[type_name] = work.matrix_bytes.get(type_name, 0.0) + tensor.nbytes
            if kind_ == "ffn_exps":
                work.expert_bytes += tensor.nbytes

    caps = _caps(kind, build)
    fused = caps.fused_gated_delta_net
    state = _state_elements(arch)
    kv_width = arch.n_head_kv * arch.head_dim
    per_cell = ggml_type(cfg.cache_type_k).nbytes((kv_width, 1)) + ggml_type(
        cfg.cache_type_v
    ).nbytes((kv_width, 1))
    sequence: list[str] = [CPU]  # the input embeddings are looked up on the host
    for layer in range(arch.n_layer):
        device = placement.layer_device.get(layer, CPU)
        work = on(device)
        if arch.has_kv(layer):
            work.nodes += _attention_nodes(arch)
            windowed = (
                arch.sliding_window
                and arch.sliding_window_pattern
                and (layer + 1) % arch.sliding_window_pattern != 0
            )
            work.kv_layers.append((arch.sliding_window if windowed else 0, per_cell))
            work.kv_type = cfg.cache_type_k
            work.attention_flops_per_depth += 4.0 * arch.n_head * arch.head_dim
        else:
            work.state_bytes += 2.0 * state * F32
            if fused or device != CPU:
                work.nodes += DELTANET_NODES_FUSED if fused else DELTANET_NODES_UNFUSED
            else:  # the measured cycles include this layer's nodes
                work.unfused_gdn_cycles += UNFUSED_GDN_CPU_CYCLES * state / GDN_REFERENCE_STATE
        sequence.append(device)
        if moe is not None and arch.is_moe_layer(layer):
            experts_on = expert_device.get(layer, device)
            if caps.fused_moe:
                expert_nodes, moe_nodes = IK_EXPERT_NODES, IK_MOE_NODES
            else:
                expert_nodes = EXPERT_NODES + MOE_NODES_PER_EXPERT * moe.n_expert_used
                moe_nodes = MOE_BASE_NODES + MOE_NODES_PER_EXPERT * moe.n_expert_used
            work.nodes += moe_nodes - expert_nodes
            on(experts_on).nodes += expert_nodes
            if moe.n_ff_shexp:
                work.nodes += SHARED_EXPERT_NODES
            if experts_on != device:
                sequence.extend([experts_on, device])
        else:
            work.nodes += DENSE_FFN_NODES
    on(placement.output_device).nodes += GRAPH_BASE_NODES
    sequence.append(placement.output_device)
    runs = [d for i, d in enumerate(sequence) if i == 0 or d != sequence[i - 1]]
    return Workload(
        devices=devices,
        splits=len(runs),
        split_bytes=arch.n_embd * F32,
        n_expert_used=moe.n_expert_used if moe else 0,
        n_expert=moe.n_expert if moe else 0,
    )


# ---------------------------------------------------------------- decode


@dataclass(frozen=True)
class DeviceTime:
    """Seconds one decoded token spends on one device, by cause."""

    read_s: float
    nodes_s: float
    serial_s: float = 0.0

    @property
    def total(self) -> float:
        """All of it."""
        return self.read_s + self.nodes_s + self.serial_s


def _gpu_gbs(hardware: HardwareProfile, device: str) -> float:
    gpu = hardware.gpu(int(device.removeprefix("CUDA")))
    spec = gpu.bandwidth_gbs if gpu and gpu.bandwidth_gbs else 1000.0
    return spec * hardware.decode.gpu_read_efficiency


def thread_gbs(hardware: HardwareProfile, kind: str, type_name: str) -> float:
    """Bytes per second one decode thread streams through this weight type's kernel."""
    return hardware.decode.thread_scale * measured_thread_gbs(hardware, kind, type_name)


def measured_thread_gbs(hardware: HardwareProfile, kind: str, type_name: str) -> float:
    """The profile's per-thread rate for this engine and type, before ``thread_scale``.

    An engine without its own figure for a type uses the other engine's (the same format
    through a different kernel), then ``default_thread_gbs``.
    """
    rates = hardware.decode.thread_gbs
    for engine in (kind, "llama.cpp", "ik_llama.cpp"):
        rate = rates.get(engine, {}).get(type_name.lower())
        if rate:
            return rate
    return hardware.decode.default_thread_gbs


def decode_times(
    work: Workload, hardware: HardwareProfile, run: EngineRun, depth: int
) -> tuple[dict[str, DeviceTime], float]:
    """Per-device seconds of one token at ``depth`` tokens of context, and the splits' seconds."""
    dec = hardware.decode
    out: dict[str, DeviceTime] = {}
    for device, dw in work.devices.items():
        kv = sum(per_cell * (min(depth, cap) if cap else depth) for cap, per_cell in dw.kv_layers)
        if device == CPU:
            threads = max(run.threads, 1)
            per_type = sum(
                b / (threads * thread_gbs(hardware, run.kind, t) * 1e9)
                for t, b in dw.weights.items()
            )
            per_type += (kv + dw.state_bytes) / (
                threads * thread_gbs(hardware, run.kind, dw.kv_type) * 1e9
            )
            total_bytes = sum(dw.weights.values()) + kv + dw.state_bytes
            capped = total_bytes / (run.host_gbs * 1e9) if run.host_gbs else 0.0
            serial = dw.unfused_gdn_cycles / (dec.cpu_clock_ghz * 1e9)
            nodes_s = dw.nodes * dec.cpu_node_us * 1e-6
            out[device] = DeviceTime(max(per_type, capped), nodes_s, serial)
        else:
            total_bytes = sum(dw.weights.values()) + kv + dw.state_bytes
            out[device] = DeviceTime(
                total_bytes / (_gpu_gbs(hardware, device) * 1e9), dw.nodes * dec.gpu_node_us * 1e-6
            )
    switches = max(work.splits - 1, 0)
    link_s = switches * (dec.split_us * 1e-6 + work.split_bytes / (dec.link_gbs * 1e9))
    return out, link_s


def decode_seconds(work: Workload, hardware: HardwareProfile, run: EngineRun, depth: int) -> float:
    """Seconds per decoded token at ``depth`` tokens of context."""
    times, link_s = decode_times(work, hardware, run, depth)
    return sum(t.total for t in times.values()) + link_s


# ---------------------------------------------------------------- prefill


def thread_gflops(hardware: HardwareProfile, kind: str, type_name: str) -> float:
    """Matrix GFLOP/s one prefill thread sustains on this weight type."""
    rates = hardware.prefill.thread_gflops
    for engine in (kind, "llama.cpp", "ik_llama.cpp"):
        rate = rates.get(engine, {}).get(type_name.lower())
        if rate:
            return rate
    return hardware.prefill.default_thread_gflops


def _gpu_flops(hardware: HardwareProfile) -> float:
    pre = hardware.prefill
    tflops = pre.gpu_tflops or 100.0
    return tflops * 1e12 * pre.gpu_flops_efficiency


def _touched(work: Workload, u: int) -> float:
    """Share of the expert bytes a ubatch of ``u`` tokens reads (each token picks its own)."""
    if not work.n_expert:
        return 1.0
    miss = 1.0 - work.n_expert_used / work.n_expert
    return 1.0 - miss**u


def prefill_seconds(
    work: Workload, hardware: HardwareProfile, run: EngineRun, prompt: int
) -> float:
    """Seconds to process a prompt of ``prompt`` tokens from an empty context."""
    gpu_present = any(d != CPU for d in work.devices)
    seconds = 0.0
    done = 0
    while done < prompt:
        u = min(run.ubatch, prompt - done)
        depth = done + u / 2
        for device, dw in work.devices.items():
            matrix = sum(dw.matrix_bytes.values())
            touched = matrix - dw.expert_bytes * (1.0 - _touched(work, u))
            attention = dw.attention_flops_per_depth * depth * u
            flops = sum(dw.flops.values()) * u + attention
            if device != CPU:
                compute = flops / _gpu_flops(hardware)
                read = touched / (_gpu_gbs(hardware, device) * 1e9)
                seconds += max(compute, read) + dw.nodes * hardware.decode.gpu_node_us * 1e-6
            elif gpu_present and u >= OP_OFFLOAD_MIN_BATCH:
                # llama.cpp copies host weights to the GPU and multiplies there
                copy = touched / (hardware.decode.link_gbs * 1e9)
                seconds += max(copy, flops / _gpu_flops(hardware))
            else:
                threads = max(run.threads_batch, 1)
                compute = sum(
                    u * f / (threads * thread_gflops(hardware, run.kind, t) * 1e9)
                    for t, f in dw.flops.items()
                )
                compute += attention / (threads * hardware.prefill.default_thread_gflops * 1e9)
                capped = touched / (run.host_gbs * 1e9) if run.host_gbs else 0.0
                seconds += max(compute, capped) + dw.nodes * hardware.decode.cpu_node_us * 1e-6
        seconds += max(work.splits - 1, 0) * hardware.decode.split_us * 1e-6
        done += u
    return seconds


# ---------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class SpeedEstimate:
    """Predicted decode and prefill speed of one plan, with the physics behind them."""

    decode_tps: float
    decode_tps_at_ctx: float
    prefill_tps: float
    error_fraction: float
    breakdown: Mapping[str, Mapping[str, float]]
    splits: int
    threads: int
    ctx: int
    notes: tuple[str, ...] = ()

    @property
    def decode_range(self) -> tuple[float, float]:
        """The decode prediction widened by the calibration's largest held-out error."""
        return _widen(self.decode_tps, self.error_fraction)

    @property
    def prefill_range(self) -> tuple[float, float]:
        """The prefill prediction widened the same way."""
        return _widen(self.prefill_tps, self.error_fraction)

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form for ``plan --json`` and ``estimate --json``."""
        return {
            "decode_tps": round(self.decode_tps, 2),
            "decode_tps_range": [round(v, 2) for v in self.decode_range],
            "decode_tps_at_ctx": round(self.decode_tps_at_ctx, 2),
            "prefill_tps": round(self.prefill_tps, 1),
            "prefill_tps_range": [round(v, 1) for v in self.prefill_range],
            "prefill_prompt_tokens": PREFILL_PROMPT,
            "ctx": self.ctx,
            "threads": self.threads,
            "graph_splits": self.splits,
            "decode_ms_per_token": {
                device: {k: round(v * 1e3, 3) for k, v in parts.items()}
                for device, parts in self.breakdown.items()
            },
            "notes": list(self.notes),
        }


def _widen(value: float, fraction: float) -> tuple[float, float]:
    return value * (1.0 - fraction), value * (1.0 + fraction)


def predict(work: Workload, hardware: HardwareProfile, run: EngineRun, ctx: int) -> SpeedEstimate:
    """Decode at an empty and at a full context, and prefill of one batch."""
    times, link_s = decode_times(work, hardware, run, 0)
    breakdown: dict[str, dict[str, float]] = {
        device: {"read": t.read_s, "nodes": t.nodes_s, "serial": t.serial_s}
        for device, t in times.items()
    }
    breakdown["link"] = {"splits": link_s}
    empty = sum(t.total for t in times.values()) + link_s
    full = decode_seconds(work, hardware, run, ctx)
    prompt = min(PREFILL_PROMPT, max(ctx - 1, 1))
    notes = []
    if any(dw.unfused_gdn_cycles for dw in work.devices.values()):
        notes.append(
            "this engine build runs Gated DeltaNet updates unfused on the CPU "
            f"(before upstream b{FUSED_GDN_SINCE_BUILD}): about "
            f"{times[CPU].serial_s * 1e3:.0f} ms per token"
        )
    if not hardware.decode.source:
        notes.append("the hardware profile's [decode] constants are defaults, not calibrated")
    return SpeedEstimate(
        decode_tps=1.0 / empty,
        decode_tps_at_ctx=1.0 / full,
        prefill_tps=prompt / prefill_seconds(work, hardware, run, prompt),
        error_fraction=hardware.decode.error_fraction,
        breakdown=breakdown,
        splits=work.splits,
        threads=run.threads,
        ctx=ctx,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- engine settings


def host_read_cap(
    hardware: HardwareProfile, nodes: Sequence[int] = (), interleave: Sequence[int] = ()
) -> tuple[float, int]:
    """Read-rate cap (GB/s) of the memory a process bound to ``nodes`` uses, and its cores.

    Without a binding: the whole machine.
    """
    spec = hardware.memory.bandwidth_gbs
    if not spec and hardware.memory.channels:
        spec = hardware.memory.channels * 38.4  # DDR5-4800, one 64-bit channel
    cores = hardware.cpu.physical_cores
    bound = [n for n in hardware.numa if n.node in (set(nodes) | set(interleave))]
    if bound and len(bound) < len(hardware.numa):
        share = len(bound) / len(hardware.numa)
        spec *= share
        cores = max(int(cores * share), 1)
    return spec * hardware.decode.host_read_efficiency, cores


def engine_run(
    kind: str,
    version: str,
    hardware: HardwareProfile,
    *,
    threads: int | None,
    threads_batch: int | None,
    batch: int,
    ubatch: int,
    numa_nodes: Sequence[int] = (),
    interleave: Sequence[int] = (),
) -> EngineRun:
    """Thread counts as the engine uses them.

    Decode uses ``--threads`` (default: the physical cores), prefill ``--threads-batch``
    (default: ``--threads``). Decode threads beyond the physical cores add no memory bandwidth,
    so they count as cores.
    """
    cap, cores = host_read_cap(hardware, numa_nodes, interleave)
    decode_threads = min(threads or cores, cores)
    batch_threads = min(threads_batch or threads or cores, hardware.cpu.threads)
    return EngineRun(
        kind=kind,
        build=build_number(version),
        threads=decode_threads,
        threads_batch=batch_threads,
        batch=batch,
        ubatch=min(ubatch, batch),
        host_gbs=cap,
    )


def threads_from_args(args: Sequence[str]) -> tuple[int | None, int | None]:
    """``-t`` / ``--threads`` and ``-tb`` / ``--threads-batch`` of a llama-server command line."""
    found: dict[str, int] = {}
    names = {"-t": "t", "--threads": "t", "-tb": "tb", "--threads-batch": "tb"}
    for i, arg in enumerate(args):
        name, _, inline = arg.partition("=")
        if name in names:
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            try:
                found[names[name]] = int(value)
            except ValueError:
                continue
    t = found.get("t")
    return (t if t and t > 0 else None), (found.get("tb") or None)


# ---------------------------------------------------------------- vLLM


def vllm_workload(
    arch: Architecture, tensors: Sequence[Tensor], gpus: Sequence[str], tensor_parallel: int
) -> Workload:
    """One token on vLLM: every GPU reads its share of the weights and runs its CUDA graph."""
    moe = arch.moe
    share = moe.n_expert_used / moe.n_expert if moe else 1.0
    devices: dict[str, DeviceWork] = {}
    used = list(gpus[: max(tensor_parallel, 1)]) or ["CUDA0"]
    for device in used:
        work = devices.setdefault(device, DeviceWork())
        for tensor in tensors:
            type_name = tensor.type_name.lower()
            if tensor.kind == "token_embd":
                read = tensor.nbytes / max(tensor.shape[-1] if len(tensor.shape) > 1 else 1, 1)
            else:
                read = tensor.nbytes * (share if tensor.kind == "ffn_exps" else 1.0)
            work.weights[type_name] = work.weights.get(type_name, 0.0) + read / len(used)
            if len(tensor.shape) >= 2 and tensor.kind not in ("token_embd", "output"):
                elements = _elements(tensor) * (share if tensor.kind == "ffn_exps" else 1.0)
                work.flops[type_name] = work.flops.get(type_name, 0.0) + 2 * elements / len(used)
                work.matrix_bytes[type_name] = work.matrix_bytes.get(
                    type_name, 0.0
                ) + tensor.nbytes / len(used)
        work.nodes = arch.n_layer * VLLM_KERNELS_PER_LAYER
    return Workload(devices, splits=1, split_bytes=0, n_expert_used=0, n_expert=0)


def parallel_decode_seconds(work: Workload, hardware: HardwareProfile) -> float:
    """Tensor-parallel GPUs work at once: the token takes as long as the slowest."""
    run = EngineRun("vllm", None, 1, 1)
    times, _ = decode_times(work, hardware, run, 0)
    return max(t.total for t in times.values())


def predict_vllm(work: Workload, hardware: HardwareProfile, ctx: int) -> SpeedEstimate:
    """vLLM: bandwidth plus its CUDA graph's kernels per layer; prefill at the GPUs' FLOPs."""
    seconds = parallel_decode_seconds(work, hardware)
    flops = max(sum(dw.flops.values()) for dw in work.devices.values())
    prefill = 1.0 / (flops / _gpu_flops(hardware)) if flops else math.inf
    times, _ = decode_times(work, hardware, EngineRun("vllm", None, 1, 1), 0)
    breakdown = {d: {"read": t.read_s, "nodes": t.nodes_s, "serial": 0.0} for d, t in times.items()}
    return SpeedEstimate(
        decode_tps=1.0 / seconds,
        decode_tps_at_ctx=1.0 / seconds,
        prefill_tps=prefill,
        error_fraction=hardware.decode.error_fraction,
        breakdown=breakdown,
        splits=1,
        threads=0,
        ctx=ctx,
        notes=("vLLM: weights at the GPUs' bandwidth plus its CUDA graph's kernels; no target",),
    )


# ---------------------------------------------------------------- a resolved profile


def run_for(resolved: ResolvedProfile) -> EngineRun:
    """The threads and binding a llama.cpp-family profile's command line gives the engine."""
    engine = llama_settings(resolved.profile.engine)
    numactl = resolved.profile.numactl
    nodes: tuple[int, ...] = ()
    interleave: tuple[int, ...] = ()
    if numactl is not None:
        nodes = numactl.membind or numactl.cpunodebind
        interleave = numactl.interleave
    return engine_run(
        engine.kind,
        engine.version,
        resolved.hardware,
        threads=engine.threads,
        threads_batch=engine.threads_batch,
        batch=engine.batch,
        ubatch=engine.ubatch,
        numa_nodes=nodes,
        interleave=interleave,
    )


def predict_profile(resolved: ResolvedProfile, tensors: Sequence[Tensor]) -> SpeedEstimate:
    """Decode and prefill speed of a resolved profile as it will be launched."""
    profile, arch, hardware = resolved.profile, resolved.architecture, resolved.hardware
    if not adapter_for(profile.engine).places_layers:  # vLLM: tensor-parallel GPUs
        vllm = vllm_settings(profile.engine)
        gpus = [name for name, _ in gpus_for(profile, hardware)]
        work = vllm_workload(arch, tensors, gpus, vllm.tensor_parallel_size)
        return predict_vllm(work, hardware, vllm.max_model_len)
    ctx = llama_settings(profile.engine).ctx
    return predict(profile_workload(resolved, tensors), hardware, run_for(resolved), ctx)


def profile_workload(resolved: ResolvedProfile, tensors: Sequence[Tensor]) -> Workload:
    """The per-token work of a llama.cpp-family profile as it is placed."""
    engine = llama_settings(resolved.profile.engine)
    arch = resolved.architecture
    cfg = llama_config_for(resolved)
    placed = place(tensors, arch.n_layer, cfg)
    return llama_workload(arch, tensors, placed, cfg, engine.kind, build_number(engine.version))
