"""Memory model of llama.cpp's llama-server: tensor placement, KV cache, compute buffers.

Placement follows llama.cpp's loader: ``-ngl N`` puts the last ``N`` of the ``n_layer + 1``
layers on the GPUs (the output layer counts as one), split across GPUs by cumulative
fractions; token embeddings stay on the host; ``-ot`` / ``--cpu-moe`` / ``--n-cpu-moe`` rules
apply in command-line order and the first regex that matches (search semantics) wins. The
regexes are ECMAScript, as the engines' ``std::regex`` reads them (``orchestrator.ecmaregex``).

Checked against real runs: ``benchmarks/data/h100-llama-server.csv`` (GPU) and
``benchmarks/data/cpu-llama-server.csv`` (CPU only), see ``orchestrator.memory.calibration``;
GPU compute buffers also against llama.cpp's own scheduler and allocator run with a device
that follows ggml-cuda's rules (``benchmarks/sched_sim``, ``tests/test_memory_sched.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.ecmaregex import compile_pattern
from orchestrator.ggml_types import ggml_type
from orchestrator.memory.breakdown import MIB, DeviceMemory, MemoryEstimate
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.schema import Architecture

CPU = "CPU"
KV_CELL_PAD = 256
EXPERT_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
OP_OFFLOAD_MIN_BATCH = 32
F32 = 4
F16 = 2
I64 = 8
CPU_ONLY_BASE_MIB = 24
REPACK_AVX2 = ("q4_0", "q4_k", "iq4_nl", "mxfp4")
"""Weight types ggml's CPU backend repacks on x86-64 with AVX2 (``ggml-cpu/repack.cpp``,
``ggml_repack_get_optimal_repack_type``): matrices with a multiple of 8 rows move from the
mmapped file into a ``CPU_REPACK`` buffer of the same size."""
REPACK_ROWS = 8


def n_cpu_moe_rules(
    count: int, moe_layers: list[int] | None = None, from_end: bool = False
) -> list[tuple[str, str]]:
    """The rules ``--n-cpu-moe N`` adds.

    Upstream: the experts of blocks ``0..N-1`` by index (a dense block in that range has none).
    ik_llama.cpp (one GPU): the experts of the last N MoE layers.
    """
    if not from_end:
        return [(rf"blk\.{i}{EXPERT_REGEX}", CPU) for i in range(count)]
    layers = list(range(count)) if moe_layers is None else moe_layers
    chosen = layers[-count:] if count else []
    return [(rf"blk\.{i}{EXPERT_REGEX}", CPU) for i in chosen]


@dataclass(frozen=True)
class LlamaConfig:
    """The memory-relevant settings of one llama-server command line."""

    ctx: int
    ubatch: int = 512
    batch: int = 2048
    gpu_layers: int = -1
    """-1: all layers (llama.cpp's default)."""
    overrides: tuple[tuple[str, str], ...] = ()
    """Ordered (regex, device) rules, including those --cpu-moe / --n-cpu-moe expand to."""
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = True
    load_mode: str = "mmap"
    parallel: int = 1
    tensor_split: tuple[float, ...] = ()
    cache_ram_mib: int = 8192
    gpus: tuple[str, ...] = ()
    gpu_vram_mib: tuple[int, ...] = ()
    cuda_context_mib: int = 590
    host_base_mib: int = 340
    split_mode: str = "layer"
    ngl_counts_output: bool = True
    kv_unified: bool = True
    """One KV stream for all slots (llama-server's default when ``-np`` is not given). False
    (``-np N`` without ``-kvu``): one stream per slot of ``ctx / N`` cells, padded to 256 each;
    the worst-case graph then attends over one stream's cells, not the whole context."""
    fa_f16_pool: bool = False
    """ik_llama.cpp: flash attention converts a quantized K / V to F16 in the CUDA memory pool
    at run time (``launch_fattn``'s ``ggml_cuda_pool_alloc``), which grows with the context in
    use and never shrinks; upstream reserves that room in the compute buffer instead."""
    residuals: int = 4
    """n_embd-wide F32 activations of a ubatch live beside the largest phase (ik_llama.cpp: 2)."""
    fused_moe: bool = False
    """ik_llama.cpp's fused ``moe_up_gate``: one n_ff_exp-wide result per expert, not three."""
    cpu_base_mib: int = CPU_ONLY_BASE_MIB
    """RSS of a CPU-only server beside its buffers (measured: upstream ~20, ik_llama.cpp ~42)."""
    kqv_work: bool = True
    """The CPU backend converts the KQ scores to F16 for ``V x softmax(KQ)`` (upstream);
    ik_llama.cpp's iqk_mul_mat multiplies them as they are and leaves the work buffer unused."""
    repack_types: tuple[str, ...] = ()
    """Weight types the CPU backend repacks (``REPACK_AVX2`` on x86-64). Only a CPU-only process
    repacks: with a GPU, its pinned host buffer takes the host weights. Empty: ``--no-repack``."""


@dataclass(frozen=True)
class Placement:
    """Where every tensor and every layer ended up."""

    tensor_device: dict[str, str]
    layer_device: dict[int, str]
    output_device: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def _layer_devices(n_layer: int, cfg: LlamaConfig) -> tuple[dict[int, str], str]:
    """Device of each block and of the output layer (index ``n_layer``)."""
    n_total = n_layer + 1
    gpu_layers = n_total if cfg.gpu_layers < 0 else cfg.gpu_layers
    if not cfg.gpus:
        gpu_layers = 0
    act = min(gpu_layers, n_total)
    start = max(n_total - gpu_layers, 0)
    if not cfg.ngl_counts_output and gpu_layers <= n_layer:
        # ik_llama.cpp: the last N blocks; the output layer stays on the host
        start = max(n_layer - gpu_layers, 0)
    weights = (
        list(cfg.tensor_split) or [float(v) for v in cfg.gpu_vram_mib] or [1.0] * len(cfg.gpus)
    )
    weights = (weights + [0.0] * len(cfg.gpus))[: len(cfg.gpus)]
    if cfg.split_mode == "none":
        weights = [1.0] + [0.0] * (len(cfg.gpus) - 1)
    total = sum(weights) or 1.0
    cumulative: list[float] = []
    running = 0.0
    for w in weights:
        running += w / total
        cumulative.append(running)
    devices: dict[int, str] = {}
    for il in range(n_total):
        beyond = il == n_layer and not cfg.ngl_counts_output and gpu_layers <= n_layer
        if il < start or act == 0 or beyond:
            devices[il] = CPU
            continue
        frac = (il - start) / act
        index = next((i for i, c in enumerate(cumulative) if frac < c), len(cumulative) - 1)
        devices[il] = cfg.gpus[index]
    output = devices.pop(n_layer)
    return devices, output


@functools.lru_cache(maxsize=8192)
def _matching(pattern: str, names: tuple[str, ...]) -> frozenset[str]:
    """Names the regex finds a match in (cached: placement searches reuse rules)."""
    rx = compile_pattern(pattern)
    return frozenset(name for name in names if rx.search(name))


def place(tensors: Sequence[Tensor], n_layer: int, cfg: LlamaConfig) -> Placement:
    """Assign every tensor to a device, as llama.cpp's loader would."""
    layer_device, output_device = _layer_devices(n_layer, cfg)
    names = tuple(t.name for t in tensors)
    overridden: dict[str, str] = {}
    for pattern, rule_device in cfg.overrides:
        for name in _matching(pattern, names):
            overridden.setdefault(name, rule_device)  # the first matching rule wins
    tensor_device: dict[str, str] = {}
    for tensor in tensors:
        device = overridden.get(tensor.name)
        if device is None:
            if tensor.name.startswith("token_embd"):
                device = CPU
            elif tensor.layer is None:
                device = output_device
            else:
                device = layer_device.get(tensor.layer, CPU)
        tensor_device[tensor.name] = device
    return Placement(tensor_device, layer_device, output_device)


def repacks(tensor: Tensor, cfg: LlamaConfig) -> bool:
    """Whether a host weight moves into the CPU backend's ``CPU_REPACK`` buffer.

    Only a CPU-only process repacks (with a GPU, its pinned host buffer type comes first in
    ``make_cpu_buft_list``), only matrices of a repackable type with a multiple of 8 rows, and
    only those a matrix multiplication reads: not ``token_embd`` (read by ``get_rows``).
    """
    return (
        not cfg.gpus
        and tensor.type_name.lower() in cfg.repack_types
        and len(tensor.shape) in (2, 3)
        and tensor.shape[1] % REPACK_ROWS == 0
        and not tensor.name.startswith("token_embd")
    )


def _pad(value: int, to: int) -> int:
    return -(-value // to) * to


def kv_streams(cfg: LlamaConfig) -> int:
    """KV streams: 1 when unified, else one per slot (``llama_kv_cache``'s ``n_stream``)."""
    return 1 if cfg.kv_unified else max(cfg.parallel, 1)


def ctx_per_stream(arch: Architecture, cfg: LlamaConfig) -> int:
    """Cells of one KV stream (llama_context's ``n_ctx_seq``).

    The context is padded to 256 cells, split over the streams, and each share padded again.
    """
    ctx = _pad(cfg.ctx or arch.ctx_train, KV_CELL_PAD)
    return _pad(ctx // kv_streams(cfg), KV_CELL_PAD)


def kv_cells(arch: Architecture, cfg: LlamaConfig, layer: int) -> int:
    """Cells a layer's KV cache holds over all streams: the context, or a sliding window."""
    per_stream = ctx_per_stream(arch, cfg)
    windowed = (
        arch.sliding_window
        and arch.sliding_window_pattern
        and (layer + 1) % arch.sliding_window_pattern != 0
    )
    if windowed:
        seqs = max(cfg.parallel, 1) if cfg.kv_unified else 1
        window = _pad(arch.sliding_window * seqs + cfg.ubatch, KV_CELL_PAD)
        per_stream = min(per_stream, window)
    return per_stream * kv_streams(cfg)


def kv_bytes_per_layer(arch: Architecture, cfg: LlamaConfig, layer: int) -> int:
    """K plus V bytes of one attention layer."""
    cells = kv_cells(arch, cfg, layer)
    width = arch.n_head_kv * arch.head_dim
    k = ggml_type(cfg.cache_type_k).nbytes((width, cells))
    v = ggml_type(cfg.cache_type_v).nbytes((width, cells))
    return k + v


def recurrent_bytes_per_layer(arch: Architecture, cfg: LlamaConfig) -> int:
    """Gated DeltaNet state of one linear-attention layer, for every sequence (f32)."""
    la = arch.linear_attention
    if la is None:
        return 0
    conv_dim = 2 * la.n_key_heads * la.key_head_dim + la.n_value_heads * la.value_head_dim
    conv = (la.conv_kernel - 1) * conv_dim * F32
    ssm = la.n_value_heads * la.key_head_dim * la.value_head_dim * F32
    return (conv + ssm) * max(cfg.parallel, 1)


def _compute_bytes(arch: Architecture, cfg: LlamaConfig, on_gpu_output: bool) -> int:
    """Peak of one backend's graph for a full ubatch: inputs + residuals + the largest phase.

    The worst-case graph (``llama_context::sched_reserve``) attends over one KV stream's cells.
    The mask is F16 with flash attention, F32 without (``build_attn_inp_kq_mask``); without
    flash attention the KQ scores are one F32 tensor of ``n_head x n_ub x n_kv``: ggml-alloc
    runs the softmax in place.
    """
    n_ub = cfg.ubatch
    n_kv = ctx_per_stream(arch, cfg)
    mask = n_kv * n_ub * (F16 if cfg.flash_attn else F32)
    residual = cfg.residuals * n_ub * arch.n_embd * F32
    if cfg.flash_attn:
        attention = 0
    else:
        attention = arch.n_head * n_ub * n_kv * F32
    if arch.moe is not None:
        moe = arch.moe
        # up, gate and their product per routed expert (fused: the product only), then each
        # expert's down projection before they are summed
        ffn = (1 if cfg.fused_moe else 3) * n_ub * moe.n_expert_used * moe.n_ff_exp * F32
        ffn += n_ub * moe.n_expert_used * arch.n_embd * F32
    else:
        ffn = 3 * n_ub * arch.n_ff * F32
    if arch.linear_attention is not None:
        la = arch.linear_attention
        conv_dim = 2 * la.n_key_heads * la.key_head_dim + la.n_value_heads * la.value_head_dim
        ffn = max(ffn, 3 * n_ub * conv_dim * F32)
    # The server reserves one output row per slot, so logits stay small.
    logits = arch.vocab * max(cfg.parallel, 1) * F32 if on_gpu_output else 0
    return mask + residual + max(attention, ffn, logits)


def _max_kv_cells(arch: Architecture, cfg: LlamaConfig) -> int:
    """Cells of the largest attention layer's KV cache (a windowed layer holds fewer)."""
    cells = [kv_cells(arch, cfg, layer) for layer in range(arch.n_layer) if arch.has_kv(layer)]
    return max(cells, default=0)


def fa_f16_copy_bytes(arch: Architecture, cfg: LlamaConfig) -> int:
    """Flash attention's F16 copies of a quantized K / V on CUDA, for one layer.

    For a batch, ggml-cuda's flash attention runs the MMA kernel
    (``ggml_cuda_get_best_fattn_kernel``), which reads K and V as F16: a cache of another type
    is converted first, into room ``ggml_backend_cuda_buffer_type_get_alloc_size`` adds to the
    attention node's own allocation (``ggml_cuda_flash_attn_ext_get_alloc_size``). So the
    compute buffer holds one layer's whole K and/or V view (every cell of the worst-case
    graph) as F16, beyond the buffers llama.cpp logs separately.
    """
    if not cfg.flash_attn:
        return 0
    cells = _max_kv_cells(arch, cfg)
    width = arch.n_head_kv * arch.head_dim
    kinds = (cfg.cache_type_k, cfg.cache_type_v)
    return sum(width * cells * F16 for kind in kinds if kind.lower() != "f16")


def kv_copy_bytes(arch: Architecture, cfg: LlamaConfig) -> int:
    """One host layer's K and V views, as the GPU copies them in to run its attention."""
    cells = _max_kv_cells(arch, cfg)
    width = arch.n_head_kv * arch.head_dim
    return sum(
        ggml_type(kind).nbytes((width, cells)) for kind in (cfg.cache_type_k, cfg.cache_type_v)
    )


def _attention_phase_bytes(arch: Architecture, cfg: LlamaConfig, *, copies: bool) -> int:
    """A GPU's compute buffer while one layer's attention runs (one ubatch).

    Live then (ggml-alloc's peak, read from llama.cpp's scheduler): the mask, the residual
    stream and the normed input (2 x n_embd), Q before and after RoPE and the attention
    output (3 x n_head x head_dim) per token; without flash attention the F32 scores and the
    per-element indices of the transposed V store; with a quantized cache, flash attention's
    F16 copies; and for a host layer whose attention the GPU takes over (``copies``), the
    layer's K and V views copied in from host RAM.
    """
    n_ub = cfg.ubatch
    n_kv = ctx_per_stream(arch, cfg)
    mask = n_kv * n_ub * (F16 if cfg.flash_attn else F32)
    activations = (2 * arch.n_embd + 3 * arch.n_head * arch.head_dim) * n_ub * F32
    if cfg.flash_attn:
        extra = 0 if cfg.fa_f16_pool else fa_f16_copy_bytes(arch, cfg)
    else:
        scores = arch.n_head * n_ub * n_kv * F32
        extra = scores + n_ub * arch.n_head_kv * arch.head_dim * I64
    if copies:
        extra += kv_copy_bytes(arch, cfg)
    return mask + activations + extra


def _expert_offload_bytes(arch: Architecture, cfg: LlamaConfig, expert: int) -> int:
    """A GPU's buffer while it multiplies a batch by one host expert tensor it copied in.

    With only the experts on the host (``--cpu-moe``), the peak is the down projection: the
    expert weights, the routed activations going in and coming out, the mask and the
    residual stream with its normed copy.
    """
    assert arch.moe is not None
    n_ub, moe = cfg.ubatch, arch.moe
    mask = ctx_per_stream(arch, cfg) * n_ub * (F16 if cfg.flash_attn else F32)
    routed = n_ub * moe.n_expert_used * (moe.n_ff_exp + arch.n_embd) * F32
    return mask + 2 * n_ub * arch.n_embd * F32 + expert + routed


def gpu_compute_bytes(
    arch: Architecture,
    cfg: LlamaConfig,
    *,
    output_here: bool,
    host_weight: int = 0,
    host_layers: bool = False,
) -> int:
    """A GPU's compute buffer: the largest of its graph's phases for one ubatch.

    ``host_weight``: the largest host weight matrix when this GPU runs the host's share of a
    large batch (op offload: once a batch reaches 32 rows ``ggml_backend_sched`` moves every
    operation on a host weight to the GPU, copying the weight in), else 0. ``host_layers``:
    whole layers are on the host, so the GPU also runs their attention, copying in each
    layer's K and V views; otherwise only experts are (``--cpu-moe``).
    """
    full = _compute_bytes(arch, cfg, output_here)
    size = max(full, _attention_phase_bytes(arch, cfg, copies=False))
    if not host_weight:
        return size
    if host_layers or arch.moe is None:
        # each copied weight leaves a hole the next activations do not always fit in
        return max(size, full + host_weight, _attention_phase_bytes(arch, cfg, copies=True))
    return max(size, _expert_offload_bytes(arch, cfg, host_weight))


def cpu_work_bytes(arch: Architecture, cfg: LlamaConfig, rows: int | None = None) -> int:
    """The CPU backend's work buffer at its peak, beside the compute buffer llama.cpp logs.

    ``ggml_graph_plan`` sizes it for the node whose second operand must be converted to the
    first's dot type; ``ggml_backend_cpu_graph_compute`` keeps the largest one allocated.
    Without flash attention that is ``kqv = V x softmax(KQ)``: the F32 scores become F16
    (``n_head x rows x n_kv`` x 2 bytes). Everything else converts one activation row set.
    ``rows``: the largest batch the CPU computes itself (default: a whole ubatch).
    """
    if cfg.flash_attn or cfg.cache_type_v.lower() == "f32" or not cfg.kqv_work:
        return 0
    rows = cfg.ubatch if rows is None else rows
    return arch.n_head * rows * ctx_per_stream(arch, cfg) * F16


def estimate_llama(
    arch: Architecture, tensors: Sequence[Tensor], cfg: LlamaConfig
) -> MemoryEstimate:
    """Bytes per device (each GPU, and ``CPU`` for host RAM) for this configuration."""
    placement = place(tensors, arch.n_layer, cfg)
    weights: dict[str, int] = {}
    for tensor in tensors:
        device = placement.tensor_device[tensor.name]
        weights[device] = weights.get(device, 0) + tensor.nbytes
    repacked = {
        t.name for t in tensors if placement.tensor_device[t.name] == CPU and repacks(t, cfg)
    }
    mapped = [
        i
        for i, t in enumerate(tensors)
        if placement.tensor_device[t.name] == CPU and t.name not in repacked
    ]
    if cfg.load_mode != "no-mmap" and mapped and (cfg.gpus or repacked):
        # mmap: the host buffer is the file range from the first to the last mapped host tensor
        # (llama_model_loader unmaps only what lies outside it), tensors in between included:
        # GPU tensors and repacked ones, whose pages were read to upload or repack them.
        span = tensors[mapped[0] : mapped[-1] + 1]
        weights[CPU] = sum(t.nbytes for t in span)
        weights[CPU] += sum(t.nbytes for t in tensors if t.name in repacked)
    kv: dict[str, int] = {}
    for layer in range(arch.n_layer):
        device = placement.layer_device[layer]
        size = (
            kv_bytes_per_layer(arch, cfg, layer)
            if arch.has_kv(layer)
            else recurrent_bytes_per_layer(arch, cfg)
        )
        kv[device] = kv.get(device, 0) + size

    # The engine opens every GPU it sees (llama_prepare_model_devices asks each one for its
    # free memory): each gets a CUDA context, even with no layer on it (-ngl 0). With
    # --split-mode none it keeps only the main GPU.
    used_gpus = list(cfg.gpus[:1] if cfg.split_mode == "none" else cfg.gpus)
    compute: dict[str, int] = {}
    notes: list[str] = []
    n_ub = cfg.ubatch
    n_kv = ctx_per_stream(arch, cfg)
    cpu_weight_tensors = [t for t in tensors if placement.tensor_device[t.name] == CPU]
    host_matrices = [
        t.nbytes for t in cpu_weight_tensors if t.layer is not None and len(t.shape) >= 2
    ]
    expert = compile_pattern(EXPERT_REGEX)
    host_layers = any(
        t.layer is not None and len(t.shape) >= 2 and not expert.search(t.name)
        for t in cpu_weight_tensors
    )
    offload = bool(used_gpus) and bool(host_matrices) and n_ub >= OP_OFFLOAD_MIN_BATCH
    gpu_layers = set(placement.layer_device.values()) | {placement.output_device}
    for index, gpu in enumerate(used_gpus):
        # the first GPU takes the host layers' large batches over (op offload)
        takes_over = index == 0 and offload
        if gpu not in gpu_layers and not weights.get(gpu, 0) and not takes_over:
            compute[gpu] = 0
            continue
        compute[gpu] = gpu_compute_bytes(
            arch,
            cfg,
            output_here=placement.output_device == gpu,
            host_weight=max(host_matrices) if takes_over else 0,
            host_layers=host_layers,
        )
    if used_gpus:
        compute[CPU] = cfg.residuals * n_ub * arch.n_embd * F32 + n_kv * n_ub * (
            F16 if cfg.flash_attn else F32
        )
        if host_matrices and not offload:  # small batches: the host computes its own layers
            compute[CPU] = max(
                compute[CPU], _compute_bytes(arch, cfg, placement.output_device == CPU)
            )
    else:
        compute[CPU] = _compute_bytes(arch, cfg, True)
    # with op offload the GPU takes every batch of 32 rows or more: the CPU attends for less
    rows = min(n_ub, OP_OFFLOAD_MIN_BATCH - 1) if offload else n_ub
    work = cpu_work_bytes(arch, cfg, rows) if kv.get(CPU, 0) else 0

    f16_copies = fa_f16_copy_bytes(arch, cfg) if used_gpus else 0
    devices: dict[str, DeviceMemory] = {}
    for gpu in used_gpus:
        pool = f16_copies if cfg.fa_f16_pool and kv.get(gpu, 0) else 0
        devices[gpu] = DeviceMemory(
            weights=weights.get(gpu, 0),
            kv=kv.get(gpu, 0),
            compute=compute.get(gpu, 0),
            overhead=cfg.cuda_context_mib * MIB + pool,
        )
    if f16_copies:
        where = (
            "the CUDA pool at run time (GPU overhead)"
            if cfg.fa_f16_pool
            else "the GPU compute buffer"
        )
        notes.append(
            f"flash attention reads the {cfg.cache_type_k}/{cfg.cache_type_v} KV cache as F16: "
            f"one layer's copy ({f16_copies / MIB:.0f} MiB) lives in {where}"
        )
    if used_gpus and not any(weights.get(g, 0) for g in used_gpus):
        notes.append(
            f"no weights on {used_gpus[0]}, yet a CUDA build opens it: a CUDA context"
            + (" and a compute buffer for the batches it offloads" if offload else "")
        )
    prompt_cache = max(cfg.cache_ram_mib, 0) * MIB
    output_buffer = arch.vocab * F32 * max(cfg.parallel, 1)
    # Process baseline: the CUDA runtime's libraries and host state (~340 MiB on the H100 runs)
    # or, for a CPU-only process, just the server (~20 MiB measured here).
    base = cfg.host_base_mib if used_gpus else cfg.cpu_base_mib
    devices[CPU] = DeviceMemory(
        weights=weights.get(CPU, 0),
        kv=kv.get(CPU, 0),
        compute=compute.get(CPU, 0),
        overhead=base * MIB + prompt_cache + output_buffer + work,
    )
    if cfg.load_mode == "mmap" and weights.get(CPU, 0):
        notes.append("host weights are mmapped: page cache, resident once touched")
    if repacked:
        notes.append(
            f"{len(repacked)} host matrices are repacked into a CPU_REPACK buffer"
            + (" (their mmapped pages stay mapped too)" if cfg.load_mode != "no-mmap" else "")
        )
    if prompt_cache:
        notes.append(f"host overhead includes the prompt cache limit ({cfg.cache_ram_mib} MiB)")
    gpu_layer_count = sum(1 for d in placement.layer_device.values() if d != CPU)
    facts: dict[str, int | float | str] = {
        "layers_on_gpu": gpu_layer_count,
        "output_device": placement.output_device,
        "kv_cells": n_kv * kv_streams(cfg),
        "prompt_cache": prompt_cache,
    }
    if work:
        facts["cpu_work_buffer"] = work
    if f16_copies:
        facts["fa_f16_copies"] = f16_copies
    return MemoryEstimate(devices, tuple(notes), facts)
