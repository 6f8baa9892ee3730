"""Architecture facts from GGUF metadata."""

from __future__ import annotations

from typing import Any

from orchestrator.memory.tensors import GgufHeader
from orchestrator.profiles.schema import Architecture, LinearAttention, Moe


def _scalar(value: Any) -> Any:
    if isinstance(value, list):
        nonzero = [v for v in value if v]
        return max(nonzero) if nonzero else 0
    return value


def architecture_from_gguf(header: GgufHeader) -> Architecture:
    """Build architecture facts from a GGUF header (what ``orch new --from-gguf`` writes)."""
    meta = header.metadata
    arch = str(meta.get("general.architecture", "llama"))

    def get(key: str, default: Any = None) -> Any:
        return _scalar(meta.get(f"{arch}.{key}", default))

    n_embd = int(get("embedding_length"))
    n_head = int(get("attention.head_count"))
    head_dim = int(get("attention.key_length") or n_embd // n_head)
    tokens = meta.get("tokenizer.ggml.tokens")
    embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    vocab = len(tokens) if isinstance(tokens, list) else (embd.shape[1] if embd else 0)
    moe = None
    if get("expert_count"):
        moe = Moe(
            n_expert=int(get("expert_count")),
            n_expert_used=int(get("expert_used_count") or 1),
            n_ff_exp=int(get("expert_feed_forward_length") or get("feed_forward_length")),
            n_ff_shexp=int(get("expert_shared_feed_forward_length") or 0),
        )
    linear = None
    if get("full_attention_interval"):
        linear = LinearAttention(
            full_attention_interval=int(get("full_attention_interval")),
            n_key_heads=int(get("ssm.group_count")),
            n_value_heads=int(get("ssm.time_step_rank")),
            key_head_dim=int(get("ssm.state_size")),
            value_head_dim=int(get("ssm.inner_size")) // int(get("ssm.time_step_rank")),
            conv_kernel=int(get("ssm.conv_kernel") or 4),
        )
    total = sum(t.nbytes for t in header.tensors)
    params = sum(_elements(t.shape) for t in header.tensors)
    return Architecture(
        description=str(meta.get("general.name", "")) or f"{arch} from GGUF ({total} bytes)",
        gguf_arch=arch,
        params_b=max(params / 1e9, 1e-6),
        n_layer=int(get("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(get("attention.head_count_kv") or n_head),
        head_dim=head_dim,
        n_ff=int(get("feed_forward_length") or 0) if moe is None else 0,
        vocab=vocab,
        ctx_train=int(get("context_length") or 4096),
        tied_embeddings=not any(t.name == "output.weight" for t in header.tensors),
        sliding_window=int(get("attention.sliding_window") or 0),
        moe=moe,
        linear_attention=linear,
    )


def _elements(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out
