"""Synthetic GGUF models: random weights, real tensor shapes.

The files written here load in a real llama-server and answer both
``/completion`` and ``/v1/chat/completions`` (the output is gibberish, the
memory footprint and the speed are those of a real model of the same shape).
They serve the test suite (tiny models that load in well under a second on a
CPU) and the memory-model calibration (the two shapes measured on an H100, see
``calibration/h100-llama-server/README.md``, and the three of the CPU matrix, see
``benchmarks/measure_cpu.py``).

Writing is fast even for multi-GB files: one random array is drawn per
distinct tensor shape and reused for every tensor of that shape.

Example:
    >>> from orchestrator.synthetic import TINY_DENSE, write_gguf
    >>> path = write_gguf(TINY_DENSE, "/tmp/tiny.gguf")  # doctest: +SKIP

Command line::

    python -m orchestrator.synthetic --spec tiny-dense --out models/tiny.gguf
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Arch = Literal["llama", "qwen3moe"]
"""Architectures the generator can write: a dense llama or a Qwen3 MoE."""

WeightType = Literal["f16", "f32", "bf16", "q8_0", "q4_0", "q6_k", "q5_k", "q4_k", "iq4_nl"]
"""Storage type of the 2-D (and 3-D expert) weight matrices."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Short ChatML template stored as ``tokenizer.chat_template`` by default."""

DEFAULT_VOCAB_SIZE = 1312
"""Vocabulary size of the calibration models (and the default for all specs)."""

_N_BYTE_TOKENS = 256
_SPECIAL_TOKENS: tuple[tuple[str, int], ...] = (
    ("<unk>", 2),  # UNKNOWN
    ("<s>", 3),  # CONTROL
    ("</s>", 3),  # CONTROL
)
_CHAT_TOKENS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>")
_TOKEN_TYPE_NORMAL = 1
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_BYTE = 6
_MIN_VOCAB_SIZE = len(_SPECIAL_TOKENS) + _N_BYTE_TOKENS + len(_CHAT_TOKENS)
_Q8_0_BLOCK = 32
_QUANTIZED = ("q8_0", "q4_0")
_WEIGHT_STD = 0.02

_RANDOM_BLOCKS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "q6_k": (256, 210, (208,)),
    "q5_k": (256, 176, (0, 2)),
    "q4_k": (256, 144, (0, 2)),
    "iq4_nl": (32, 18, (0,)),
}
"""Types written as random blocks (gguf cannot quantize them): elements and bytes per block and
the offsets of the block's fp16 scales (``ggml-common.h``), set to a small finite value so the
weights stay bounded. For speed and memory measurements the values do not matter."""
_BLOCK_SCALE = 0.001

_FILE_TYPE: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k": 15, "q5_k": 17, "q6_k": 18,
    "iq4_nl": 25, "bf16": 32,
}  # fmt: skip
"""``general.file_type`` (llama.cpp's ``LLAMA_FTYPE_*``) per weight type."""

_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q6_k": 210.0 / 256.0,
    "q5_k": 176.0 / 256.0,
    "q4_k": 144.0 / 256.0,
    "iq4_nl": 18.0 / 32.0,
    "q8_0": 34.0 / 32.0,
    "q4_0": 18.0 / 32.0,
}


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape of a synthetic model.

    Attributes:
        name: Value of ``general.name``.
        arch: ``"llama"`` (dense) or ``"qwen3moe"`` (every block MoE, with
            per-head q/k norms).
        n_embd: Embedding length.
        n_layer: Number of blocks.
        n_head: Attention heads.
        n_head_kv: KV heads (GQA); must divide ``n_head``.
        head_dim: Key/value length per head.
        n_ff: Dense feed-forward length (stored as ``feed_forward_length``
            also for MoE, where it is unused).
        n_expert: Experts per block; 0 for dense.
        n_expert_used: Experts routed per token; 0 for dense.
        n_ff_exp: Feed-forward length of one expert; 0 for dense.
        ctx_train: Trained context length (``context_length``).
        weight_type: Type of the 2-D/3-D weights; norms and the MoE router
            (``ffn_gate_inp``) are always F32.
        n_vocab: Vocabulary size (rows of ``token_embd`` and ``output``).
        rope_freq_base: ``rope.freq_base``.
        rms_eps: ``attention.layer_norm_rms_epsilon``.
        byte_tokens: Byte-fallback tokens ``<0x00>``... (256; 128 keeps every token whole UTF-8,
            with U+2581 as a token of its own, so no sampled token is half a character, which
            ik_llama.cpp's chat endpoint answers with HTTP 500; prompts must then be ASCII).
    """

    name: str
    arch: Arch
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    ctx_train: int = 4096
    weight_type: WeightType = "f16"
    n_vocab: int = DEFAULT_VOCAB_SIZE
    rope_freq_base: float = 1_000_000.0
    rms_eps: float = 1e-6
    byte_tokens: int = _N_BYTE_TOKENS

    def __post_init__(self) -> None:
        """Validate the spec.

        Raises:
            ValueError: If a field is out of range or inconsistent with the
                architecture or the weight type.
        """
        if self.arch not in ("llama", "qwen3moe"):
            raise ValueError(f"unsupported arch {self.arch!r}")
        if self.weight_type not in _FILE_TYPE:
            raise ValueError(f"unsupported weight_type {self.weight_type!r}")
        for field in ("n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff", "ctx_train"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive")
        if self.n_head % self.n_head_kv != 0:
            raise ValueError("n_head must be a multiple of n_head_kv")
        if self.n_vocab < _MIN_VOCAB_SIZE:
            raise ValueError(f"n_vocab must be at least {_MIN_VOCAB_SIZE}")
        if self.byte_tokens not in (128, _N_BYTE_TOKENS):
            raise ValueError("byte_tokens must be 128 (ASCII) or 256")
        if self.is_moe:
            if self.n_expert <= 0 or self.n_ff_exp <= 0:
                raise ValueError("qwen3moe needs n_expert > 0 and n_ff_exp > 0")
            if not 0 < self.n_expert_used <= self.n_expert:
                raise ValueError("n_expert_used must be in 1..n_expert")
        elif self.n_expert or self.n_expert_used or self.n_ff_exp:
            raise ValueError("a dense spec must have n_expert = n_expert_used = n_ff_exp = 0")
        block = _block_elements(self.weight_type)
        if block > 1:
            rows = (
                self.n_embd,
                self.n_head * self.head_dim,
                self.n_ff_exp if self.is_moe else self.n_ff,
            )
            if any(r % block for r in rows):
                raise ValueError(
                    f"{self.weight_type} needs row lengths that are multiples of {block}"
                )

    @property
    def is_moe(self) -> bool:
        """Whether the spec is a mixture-of-experts model."""
        return self.arch == "qwen3moe"


def _block_elements(weight_type: str) -> int:
    if weight_type in _QUANTIZED:
        return _Q8_0_BLOCK
    if weight_type in _RANDOM_BLOCKS:
        return _RANDOM_BLOCKS[weight_type][0]
    return 1


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a synthetic model.

    Attributes:
        name: GGUF tensor name, e.g. ``blk.0.attn_q.weight``.
        shape: Shape in GGML order (``ne0`` first, as llama.cpp prints it).
        ggml_type: ``"F32"``, ``"F16"``, ``"Q8_0"`` or ``"Q4_0"``.
        nbytes: Size of the tensor data in bytes.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    nbytes: int


def tensor_specs(spec: SyntheticSpec) -> tuple[TensorSpec, ...]:
    """List the tensors :func:`write_gguf` writes for ``spec``, in file order.

    Args:
        spec: Model shape.

    Returns:
        The tensors: ``token_embd``, every block's tensors, ``output_norm``
        and ``output``.
    """
    wtype = spec.weight_type.upper()
    e, q, kv = spec.n_embd, spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim

    def make(name: str, shape: tuple[int, ...], ggml_type: str) -> TensorSpec:
        count = int(np.prod(shape))
        size = int(count * (4.0 if ggml_type == "F32" else _BYTES_PER_ELEMENT[spec.weight_type]))
        return TensorSpec(f"{name}.weight", shape, ggml_type, size)

    out = [make("token_embd", (e, spec.n_vocab), wtype)]
    for i in range(spec.n_layer):
        b = f"blk.{i}"
        out += [
            make(f"{b}.attn_norm", (e,), "F32"),
            make(f"{b}.attn_q", (e, q), wtype),
            make(f"{b}.attn_k", (e, kv), wtype),
            make(f"{b}.attn_v", (e, kv), wtype),
            make(f"{b}.attn_output", (q, e), wtype),
        ]
        if spec.is_moe:
            out += [
                make(f"{b}.attn_q_norm", (spec.head_dim,), "F32"),
                make(f"{b}.attn_k_norm", (spec.head_dim,), "F32"),
                make(f"{b}.ffn_norm", (e,), "F32"),
                make(f"{b}.ffn_gate_inp", (e, spec.n_expert), "F32"),
                make(f"{b}.ffn_gate_exps", (e, spec.n_ff_exp, spec.n_expert), wtype),
                make(f"{b}.ffn_up_exps", (e, spec.n_ff_exp, spec.n_expert), wtype),
                make(f"{b}.ffn_down_exps", (spec.n_ff_exp, e, spec.n_expert), wtype),
            ]
        else:
            out += [
                make(f"{b}.ffn_norm", (e,), "F32"),
                make(f"{b}.ffn_gate", (e, spec.n_ff), wtype),
                make(f"{b}.ffn_up", (e, spec.n_ff), wtype),
                make(f"{b}.ffn_down", (spec.n_ff, e), wtype),
            ]
    out += [make("output_norm", (e,), "F32"), make("output", (e, spec.n_vocab), wtype)]
    return tuple(out)


def n_params(spec: SyntheticSpec) -> int:
    """Count the parameters of ``spec`` (all tensors, embeddings included).

    Args:
        spec: Model shape.

    Returns:
        The number of weights.
    """
    return sum(int(np.prod(t.shape)) for t in tensor_specs(spec))


TINY_DENSE = SyntheticSpec(
    name="synthetic-tiny-llama",
    arch="llama",
    n_embd=128,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    head_dim=32,
    n_ff=384,
    ctx_train=8192,
)
"""Dense llama of about 1 MB: loads in well under a second on a CPU."""

TINY_MOE = SyntheticSpec(
    name="synthetic-tiny-qwen3moe",
    arch="qwen3moe",
    n_embd=128,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    head_dim=32,
    n_ff=384,
    n_expert=8,
    n_expert_used=2,
    n_ff_exp=128,
    ctx_train=8192,
)
"""Qwen3 MoE of about 2 MB (8 experts, 2 used)."""

CALIBRATION_MOE = SyntheticSpec(
    name="synthetic-qwen3moe",
    arch="qwen3moe",
    n_embd=2048,
    n_layer=24,
    n_head=16,
    n_head_kv=4,
    head_dim=128,
    n_ff=2816,
    n_expert=16,
    n_expert_used=4,
    n_ff_exp=768,
    ctx_train=65536,
)
"""The ``moe`` model of the H100 calibration runs (2.07 B params, ~3.86 GiB)."""

CALIBRATION_DENSE = SyntheticSpec(
    name="synthetic-llama",
    arch="llama",
    n_embd=3072,
    n_layer=20,
    n_head=24,
    n_head_kv=8,
    head_dim=128,
    n_ff=8192,
    ctx_train=131072,
)
"""The ``dense`` model of the H100 calibration runs (2.02 B params, ~3.77 GiB)."""

CPU_BENCH_DENSE = SyntheticSpec(
    name="synthetic-cpu-llama",
    arch="llama",
    n_embd=1024,
    n_layer=12,
    n_head=16,
    n_head_kv=4,
    head_dim=64,
    n_ff=2816,
    ctx_train=131072,
)
"""The ``dense`` model of the CPU matrix (``benchmarks/measure_cpu.py``): 138 M params, ~263 MiB."""

CPU_BENCH_DENSE_Q4 = dataclasses.replace(
    CPU_BENCH_DENSE, name="synthetic-cpu-llama-q4_0", weight_type="q4_0"
)
"""The same shape in Q4_0 (~74 MiB): the CPU backend repacks its matrices (AVX2 / NEON)."""

CPU_BENCH_MOE = SyntheticSpec(
    name="synthetic-cpu-qwen3moe",
    arch="qwen3moe",
    n_embd=1024,
    n_layer=8,
    n_head=16,
    n_head_kv=4,
    head_dim=64,
    n_ff=2816,
    n_expert=32,
    n_expert_used=4,
    n_ff_exp=512,
    ctx_train=131072,
    weight_type="q8_0",
)
"""The ``moe`` model of the CPU matrix: 32 experts, 4 used, Q8_0 (427 M params, ~433 MiB)."""

IK_MOE = SyntheticSpec(
    name="synthetic-ik-qwen3moe",
    arch="qwen3moe",
    n_embd=512,
    n_layer=4,
    n_head=8,
    n_head_kv=2,
    head_dim=64,
    n_ff=1024,
    n_expert=16,
    n_expert_used=4,
    n_ff_exp=256,
    ctx_train=32768,
    byte_tokens=128,
)
"""A Qwen3 MoE (16 experts, 4 used; ~56 MiB in F16) whose every matrix row is a multiple of
256 wide, so ik_llama.cpp's ``llama-quantize`` can write IQ4_KSS everywhere asked."""

SPECS: dict[str, SyntheticSpec] = {
    "tiny-dense": TINY_DENSE,
    "tiny-moe": TINY_MOE,
    "calibration-moe": CALIBRATION_MOE,
    "calibration-dense": CALIBRATION_DENSE,
    "cpu-dense": CPU_BENCH_DENSE,
    "cpu-dense-q4_0": CPU_BENCH_DENSE_Q4,
    "cpu-moe": CPU_BENCH_MOE,
    "ik-moe": IK_MOE,
}
"""Named specs, as accepted by the command line's ``--spec``."""


def vocab(
    n_vocab: int = DEFAULT_VOCAB_SIZE, byte_tokens: int = _N_BYTE_TOKENS
) -> tuple[list[str], list[float], list[int]]:
    """Build a small SentencePiece-style vocabulary with ASCII token texts.

    Layout: ``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens ``<0x00>`` to
    ``<0xFF>`` (byte fallback, so any text tokenizes), the ChatML control
    tokens ``<|im_start|>`` and ``<|im_end|>``, then word pieces made of
    printable ASCII characters (single characters, then two- and
    three-letter pieces) until ``n_vocab`` tokens.

    Args:
        n_vocab: Total number of tokens.
        byte_tokens: How many byte tokens (128: ASCII bytes only).

    Returns:
        Token texts, scores and token types (llama.cpp's ``LLAMA_TOKEN_TYPE_*``).

    Raises:
        ValueError: If ``n_vocab`` is too small for the fixed tokens.
    """
    if n_vocab < _MIN_VOCAB_SIZE:
        raise ValueError(f"n_vocab must be at least {_MIN_VOCAB_SIZE}")
    tokens = [text for text, _ in _SPECIAL_TOKENS]
    types = [ttype for _, ttype in _SPECIAL_TOKENS]
    tokens += [f"<0x{b:02X}>" for b in range(byte_tokens)]
    types += [_TOKEN_TYPE_BYTE] * byte_tokens
    tokens += list(_CHAT_TOKENS)
    types += [_TOKEN_TYPE_CONTROL] * len(_CHAT_TOKENS)
    if byte_tokens < _N_BYTE_TOKENS:
        # SentencePiece writes a space as U+2581: without the high byte tokens it needs its own
        tokens.append("\u2581")
        types.append(_TOKEN_TYPE_NORMAL)
    for piece in _pieces(n_vocab - len(tokens)):
        tokens.append(piece)
        types.append(_TOKEN_TYPE_NORMAL)
    scores = [-float(i) for i in range(n_vocab)]
    return tokens, scores, types


def _pieces(count: int) -> list[str]:
    """Return ``count`` distinct printable-ASCII word pieces.

    Args:
        count: Number of pieces wanted.

    Returns:
        Single printable characters (no space: SentencePiece replaces spaces
        with a non-ASCII marker), then lowercase pairs, capitalised pairs and
        lowercase triples.
    """
    lower = "abcdefghijklmnopqrstuvwxyz"
    out: list[str] = []
    candidates: list[Sequence[str]] = [
        [chr(c) for c in range(0x21, 0x7F)],
        [a + b for a in lower for b in lower],
        [a.upper() + b for a in lower for b in lower],
        [a + b + c for a in lower for b in lower for c in lower],
    ]
    for group in candidates:
        for piece in group:
            if len(out) == count:
                return out
            out.append(piece)
    if len(out) < count:
        raise ValueError(f"cannot build {count} word pieces")
    return out


def _random_weights(
    rng: np.random.Generator, shape: tuple[int, ...], weight_type: str
) -> npt.NDArray[np.generic]:
    """Draw one random weight array, stored in ``weight_type``.

    Args:
        rng: Random generator.
        shape: Shape in numpy order (last axis is the row, GGML's ``ne0``).
        weight_type: ``"F32"``, ``"F16"``, ``"Q8_0"`` or ``"Q4_0"``.

    Returns:
        The array to hand to ``GGUFWriter.add_tensor``; for Q8_0 and Q4_0 the
        quantized bytes (uint8, last axis 34/32 or 18/32 of the row length).
    """
    import gguf  # local: keep ``import orchestrator.synthetic`` cheap

    data = rng.standard_normal(shape, dtype=np.float32)
    data *= np.float32(_WEIGHT_STD)
    if weight_type == "F32":
        return data
    if weight_type == "F16":
        return data.astype(np.float16)
    if weight_type.lower() in _RANDOM_BLOCKS:
        return _random_blocks(rng, shape, weight_type.lower())
    qtype = gguf.GGMLQuantizationType[weight_type]
    quantized: npt.NDArray[np.generic] = gguf.quants.quantize(data, qtype)
    return quantized


def _random_blocks(
    rng: np.random.Generator, shape: tuple[int, ...], weight_type: str
) -> npt.NDArray[np.uint8]:
    """Random quantized blocks with every fp16 scale set to ``_BLOCK_SCALE``."""
    elements, size, scales = _RANDOM_BLOCKS[weight_type]
    blocks = shape[-1] // elements
    raw = rng.integers(0, 256, size=(*shape[:-1], blocks, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(_BLOCK_SCALE).tobytes(), dtype=np.uint8)
    for offset in scales:
        raw[..., offset : offset + 2] = scale
    return raw.reshape(*shape[:-1], blocks * size)


def write_gguf(
    spec: SyntheticSpec,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    chat_template: str | None = CHATML_TEMPLATE,
    split_max_tensors: int = 0,
    sparse: bool = False,
) -> Path:
    """Write a GGUF file with random weights and the tensor shapes of ``spec``.

    The file is written to a temporary name next to ``path`` and renamed
    into place, so a reader never sees a half-written model.

    Args:
        spec: Model shape.
        path: Destination file; its parent directory is created if missing.
        seed: Seed of the random weights (same seed, same file).
        chat_template: Jinja chat template stored as
            ``tokenizer.chat_template``; ``None`` leaves the key out (then
            ``/v1/chat/completions`` relies on llama-server's fallback).
        split_max_tensors: Split into ``NAME-00001-of-0000N.gguf`` files of at most
            this many tensors each, as ``llama-gguf-split`` would (0: one file).
        sparse: Write the header only and leave the tensor data a hole of its full size
            (for tools that plan from the header, such as llama.cpp's ``no_alloc`` loading).

    Returns:
        The path written (a split's first part).
    """
    import gguf  # local: keep ``import orchestrator.synthetic`` cheap

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    rng = np.random.default_rng(seed)
    if split_max_tensors:  # the writer names the parts after its path: write them in a folder
        tmp.mkdir()
        tmp = tmp / dest.name

    writer = gguf.GGUFWriter(tmp, spec.arch, split_max_tensors=split_max_tensors)
    writer.add_name(spec.name)
    writer.add_context_length(spec.ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_key_length(spec.head_dim)
    writer.add_value_length(spec.head_dim)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_file_type(_FILE_TYPE[spec.weight_type])
    if spec.is_moe:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
        writer.add_expert_feed_forward_length(spec.n_ff_exp)

    tokens, scores, types = vocab(spec.n_vocab, spec.byte_tokens)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    if sparse:
        return _write_sparse(writer, spec, tmp, dest)
    cache: dict[tuple[tuple[int, ...], str], npt.NDArray[np.generic]] = {}
    for t in tensor_specs(spec):
        np_shape = tuple(reversed(t.shape))
        key = (np_shape, t.ggml_type)
        if key not in cache:
            if len(t.shape) == 1:  # norm weights: ones, as in a freshly initialised model
                cache[key] = np.ones(np_shape, dtype=np.float32)
            else:
                cache[key] = _random_weights(rng, np_shape, t.ggml_type)
        quantized = t.ggml_type not in ("F32", "F16")
        raw_dtype = gguf.GGMLQuantizationType[t.ggml_type] if quantized else None
        writer.add_tensor(t.name, cache[key], raw_dtype=raw_dtype)

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        if not split_max_tensors:
            tmp.replace(dest)
            return dest
        parts = sorted(tmp.parent.iterdir())
        for part in parts:
            part.replace(dest.with_name(part.name))
        tmp.parent.rmdir()
        return dest.with_name(parts[0].name)
    except BaseException:
        writer.close()
        if split_max_tensors:
            shutil.rmtree(tmp.parent, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _write_sparse(writer: Any, spec: SyntheticSpec, tmp: Path, dest: Path) -> Path:
    """Header and tensor table, then a hole as long as the tensor data."""
    import gguf

    end = 0
    for t in tensor_specs(spec):
        np_shape = tuple(reversed(t.shape))
        if t.ggml_type in ("F32", "F16"):
            dtype = np.dtype(np.float32 if t.ggml_type == "F32" else np.float16)
            writer.add_tensor_info(t.name, np_shape, dtype, t.nbytes)
        else:
            row_bytes = t.nbytes // max(int(np.prod(np_shape[:-1])), 1)
            byte_shape = (*np_shape[:-1], row_bytes)
            qtype = gguf.GGMLQuantizationType[t.ggml_type]
            writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, qtype)
        end += writer.ggml_pad(t.nbytes, writer.data_alignment)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.flush()
        start = writer.ggml_pad(tmp.stat().st_size, writer.data_alignment)
        writer.close()
        os.truncate(tmp, start + end)
        tmp.replace(dest)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dest


IK_RECIPES: dict[str, tuple[str, ...]] = {
    # seed 003's IQ4_KSS mix: experts IQ4_KSS, attention Q8_0 (its output IQ4_KS), embeddings
    # IQ4_K, output Q8_0; the base type IQ4_KS takes whatever no rule names.
    "iq4_kss-mix": (
        "--custom-q",
        r"ffn_.*_exps=iq4_kss,attn_output=iq4_ks,attn_[qkv]\.=q8_0",
        "--token-embedding-type",
        "iq4_k",
        "--output-tensor-type",
        "q8_0",
        "IQ4_KS",
    ),
    "iq3_ks": ("IQ3_KS",),  # 2 bytes of scale per row
}
"""ik_llama.cpp ``llama-quantize`` arguments (options, then the file type) per recipe name."""


def quantize_ik(llama_quantize: Path, source: Path, dest: Path, recipe: str) -> Path:
    """Quantize ``source`` with ik_llama.cpp's own ``llama-quantize`` (atomically into ``dest``).

    Raises:
        RuntimeError: The quantizer failed (its output's tail in the message).
    """
    import subprocess

    *options, file_type = IK_RECIPES[recipe]
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    argv = [str(llama_quantize), *options, str(source), str(tmp), file_type, "2"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(argv)} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    tmp.replace(dest)
    return dest


def _with_overrides(spec: SyntheticSpec, weight_type: str | None) -> SyntheticSpec:
    """Return ``spec`` with the command line's overrides applied.

    Args:
        spec: Named spec.
        weight_type: ``--weight-type`` value, or ``None`` to keep the spec's.

    Returns:
        The spec to write.
    """
    if weight_type is None:
        return spec
    types: dict[str, WeightType] = {t: t for t in typing.get_args(WeightType)}
    return dataclasses.replace(spec, weight_type=types[weight_type])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write one of the named specs to a file.

    Args:
        argv: Arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.synthetic",
        description="Write a GGUF model with random weights and real tensor shapes.",
    )
    parser.add_argument("--spec", required=True, choices=sorted(SPECS), help="named model shape")
    parser.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights (default 0)"
    )
    parser.add_argument(
        "--weight-type",
        choices=sorted(_FILE_TYPE),
        default=None,
        help="override the spec's weight type",
    )
    parser.add_argument(
        "--no-chat-template", action="store_true", help="leave tokenizer.chat_template out"
    )
    args = parser.parse_args(argv)
    try:
        spec = _with_overrides(SPECS[args.spec], args.weight_type)
    except ValueError as exc:
        parser.error(str(exc))
    write_gguf(
        spec,
        args.out,
        seed=args.seed,
        chat_template=None if args.no_chat_template else CHATML_TEMPLATE,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
