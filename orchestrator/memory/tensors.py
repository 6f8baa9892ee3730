"""The tensor table of a model: read from a GGUF header, or built from architecture facts."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.ggml_types import ggml_type
from orchestrator.memory.gguf_file import read_gguf_file
from orchestrator.profiles.schema import Architecture

_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class Tensor:
    """One weight tensor: name as llama.cpp names it, ggml shape (ne0 first), type, size."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    nbytes: int

    @functools.cached_property
    def layer(self) -> int | None:
        """The block index, or None for token_embd / output / output_norm."""
        match = _BLOCK.match(self.name)
        return int(match.group(1)) if match else None

    @functools.cached_property
    def kind(self) -> str:
        """The tensor's role, used by quant recipes: ``attn_q``, ``ffn_exps``, ``norm``..."""
        return tensor_kind(self.name)


def tensor_kind(name: str) -> str:
    """Classify a llama.cpp tensor name into a recipe kind."""
    base = _BLOCK.sub("", name).rsplit(".", 1)[0]
    if name.startswith("token_embd"):
        return "token_embd"
    if base == "output":
        return "output"
    if "norm" in base or base.endswith(("_a", "_dt", "_b")) or name.endswith(".bias"):
        return "norm"
    if base.endswith("_exps"):
        return "ffn_exps"
    if base.endswith("_shexp") and base.startswith("ffn_gate_inp"):
        return "router"
    if base.endswith("_shexp"):
        return "ffn_shexp"
    if base.startswith("ffn_gate_inp"):
        return "router"
    if base.startswith("ffn_"):
        return "ffn"
    if base.startswith("ssm_conv"):
        return "ssm_conv"
    if base.startswith(("ssm_", "attn_qkv", "attn_gate")):
        return "ssm"
    if base.startswith("attn_"):
        return "attn"
    return "other"


# Quant recipes: the ggml type each tensor kind gets in a typical GGUF of that quant.
# "*" is the fallback for 2-D weights; norms, routers and conv kernels stay f32.
RECIPES: dict[str, dict[str, str]] = {
    "F32": {"*": "f32"},
    "F16": {"*": "f16"},
    "BF16": {"*": "bf16"},
    "Q8_0": {"*": "q8_0"},
    "Q6_K": {"*": "q6_K", "token_embd": "q6_K", "output": "q6_K"},
    "Q5_K_M": {"*": "q5_K", "attn_v": "q6_K", "ffn_down": "q6_K", "output": "q6_K"},
    "Q4_K_M": {"*": "q4_K", "attn_v": "q6_K", "ffn_down": "q6_K", "output": "q6_K"},
    "IQ4_NL": {"*": "iq4_nl", "output": "q6_K", "token_embd": "iq4_nl"},
    "IQ4_XS": {"*": "iq4_xs", "output": "q6_K"},
    "NVFP4": {"*": "nvfp4", "attn": "bf16", "token_embd": "bf16", "output": "bf16", "ssm": "bf16"},
    "IQ4_KSS": {
        "*": "iq4_ks",
        "ffn_exps": "iq4_kss",
        "attn": "q8_0",
        "ssm": "q8_0",
        "ffn_shexp": "q8_0",
        "output": "q8_0",
        "token_embd": "iq4_k",
    },
}
ALWAYS_F32 = {"norm", "router", "ssm_conv"}


def recipe_type(recipe: str, kind: str, overrides: dict[str, str]) -> str:
    """The ggml type a tensor kind gets under a recipe, after profile overrides."""
    if kind in overrides:
        return overrides[kind]
    if kind in ALWAYS_F32:
        return "f32"
    table = RECIPES[recipe]
    return table.get(kind, table["*"])


def _sized(name: str, shape: tuple[int, ...], type_name: str) -> Tensor:
    return Tensor(name, shape, type_name, ggml_type(type_name).nbytes(shape))


def _attention_tensors(arch: Architecture, blk: str) -> Iterable[tuple[str, tuple[int, ...]]]:
    q_out = arch.n_head * arch.head_dim
    kv_out = arch.n_head_kv * arch.head_dim
    gated = arch.linear_attention is not None  # Qwen3-Next full-attention layers gate the output
    yield f"{blk}.attn_norm.weight", (arch.n_embd,)
    yield f"{blk}.attn_q.weight", (arch.n_embd, q_out * (2 if gated else 1))
    yield f"{blk}.attn_k.weight", (arch.n_embd, kv_out)
    yield f"{blk}.attn_v.weight", (arch.n_embd, kv_out)
    yield f"{blk}.attn_output.weight", (q_out, arch.n_embd)
    if arch.gguf_arch.startswith("qwen3"):
        yield f"{blk}.attn_q_norm.weight", (arch.head_dim,)
        yield f"{blk}.attn_k_norm.weight", (arch.head_dim,)


def _linear_attention_tensors(
    arch: Architecture, blk: str
) -> Iterable[tuple[str, tuple[int, ...]]]:
    la = arch.linear_attention
    assert la is not None
    key_dim = la.n_key_heads * la.key_head_dim
    value_dim = la.n_value_heads * la.value_head_dim
    conv_dim = 2 * key_dim + value_dim
    yield f"{blk}.attn_norm.weight", (arch.n_embd,)
    yield f"{blk}.attn_qkv.weight", (arch.n_embd, conv_dim)
    yield f"{blk}.attn_gate.weight", (arch.n_embd, value_dim)
    yield f"{blk}.ssm_ba.weight", (arch.n_embd, 2 * la.n_value_heads)
    yield f"{blk}.ssm_conv1d.weight", (la.conv_kernel, conv_dim)
    yield f"{blk}.ssm_dt.bias", (la.n_value_heads,)
    yield f"{blk}.ssm_a", (la.n_value_heads,)
    yield f"{blk}.ssm_norm.weight", (la.value_head_dim,)
    yield f"{blk}.ssm_out.weight", (value_dim, arch.n_embd)


def _ffn_tensors(arch: Architecture, layer: int, blk: str) -> Iterable[tuple[str, tuple[int, ...]]]:
    yield f"{blk}.ffn_norm.weight", (arch.n_embd,)
    moe = arch.moe
    if moe is not None and arch.is_moe_layer(layer):
        yield f"{blk}.ffn_gate_inp.weight", (arch.n_embd, moe.n_expert)
        yield f"{blk}.ffn_gate_exps.weight", (arch.n_embd, moe.n_ff_exp, moe.n_expert)
        yield f"{blk}.ffn_up_exps.weight", (arch.n_embd, moe.n_ff_exp, moe.n_expert)
        yield f"{blk}.ffn_down_exps.weight", (moe.n_ff_exp, arch.n_embd, moe.n_expert)
        if moe.n_ff_shexp:
            yield f"{blk}.ffn_gate_inp_shexp.weight", (arch.n_embd,)
            yield f"{blk}.ffn_gate_shexp.weight", (arch.n_embd, moe.n_ff_shexp)
            yield f"{blk}.ffn_up_shexp.weight", (arch.n_embd, moe.n_ff_shexp)
            yield f"{blk}.ffn_down_shexp.weight", (moe.n_ff_shexp, arch.n_embd)
    else:
        yield f"{blk}.ffn_gate.weight", (arch.n_embd, arch.n_ff)
        yield f"{blk}.ffn_up.weight", (arch.n_embd, arch.n_ff)
        yield f"{blk}.ffn_down.weight", (arch.n_ff, arch.n_embd)


def tensors_from_architecture(
    arch: Architecture, recipe: str, overrides: dict[str, str] | None = None
) -> list[Tensor]:
    """Build the tensor table llama.cpp would load for this architecture and quant recipe."""
    if recipe not in RECIPES:
        raise KeyError(recipe)
    overrides = {k: v.lower() for k, v in (overrides or {}).items()}

    def typed(name: str, shape: tuple[int, ...]) -> Tensor:
        kind = tensor_kind(name)
        if len(shape) == 1:
            return _sized(name, shape, "f32")
        if kind in overrides:
            return _sized(name, shape, overrides[kind])
        specific = _BLOCK.sub("", name).rsplit(".", 1)[0]
        table = RECIPES[recipe]
        type_name = (
            overrides.get(specific) or table.get(specific) or recipe_type(recipe, kind, overrides)
        )
        return _sized(name, shape, type_name)

    out = [typed("token_embd.weight", (arch.n_embd, arch.vocab))]
    for layer in range(arch.n_layer):
        blk = f"blk.{layer}"
        if arch.has_kv(layer):
            out.extend(typed(n, s) for n, s in _attention_tensors(arch, blk))
        else:
            out.extend(typed(n, s) for n, s in _linear_attention_tensors(arch, blk))
        out.extend(typed(n, s) for n, s in _ffn_tensors(arch, layer, blk))
    out.append(typed("output_norm.weight", (arch.n_embd,)))
    if not arch.tied_embeddings:
        out.append(typed("output.weight", (arch.n_embd, arch.vocab)))
    return out


def split_paths(first: Path) -> list[Path]:
    """All files of a split GGUF (``-00001-of-00003.gguf``), or just the one file."""
    match = re.search(r"-(\d{5})-of-(\d{5})\.gguf$", first.name)
    if not match:
        return [first]
    count = int(match.group(2))
    stem = first.name[: match.start()]
    return [first.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


@dataclass(frozen=True)
class GgufHeader:
    """What orch needs from a GGUF header: metadata and the tensor table."""

    metadata: dict[str, object]
    tensors: tuple[Tensor, ...]
    files: tuple[Path, ...]


def read_gguf(first: Path) -> GgufHeader:
    """Read metadata and tensor infos from every split file, without reading tensor data.

    Raises GgufError (a ValueError naming the file and field) on anything it cannot read.
    """
    metadata: dict[str, object] = {}
    tensors: list[Tensor] = []
    files = split_paths(first)
    for path in files:
        header = read_gguf_file(path)
        for key, value in header.metadata.items():
            metadata.setdefault(key, value)
        for info in header.tensors:
            tensors.append(Tensor(info.name, info.shape, info.ggml_type.name, info.nbytes))
    return GgufHeader(metadata, tuple(tensors), tuple(files))


def total_bytes(tensors: Sequence[Tensor]) -> int:
    """Sum of tensor sizes."""
    return sum(t.nbytes for t in tensors)
