"""Architecture facts from GGUF metadata, checked: a bad value names its GGUF key."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from orchestrator.memory.gguf_file import GgufError
from orchestrator.memory.tensors import GgufHeader
from orchestrator.profiles.schema import Architecture, LinearAttention, Moe, arch_name_problem
from orchestrator.textsafe import escape_controls


def _scalar(value: Any) -> Any:
    """A per-layer list (hybrid models) counts as its largest non-zero entry."""
    if isinstance(value, list):
        nonzero = [v for v in value if v]
        return max(nonzero) if nonzero else 0
    return value


class _Meta:
    """Integer reads of ``ARCH.KEY`` metadata that name the key when a value is unusable."""

    def __init__(self, header: GgufHeader) -> None:
        self.header = header
        self.path = header.files[0]
        arch = header.metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            self.arch = ""
            raise self.error("general.architecture", f"missing or not a name ({arch!r})")
        problem = arch_name_problem(arch)
        if problem:  # it names keys in every message below, and the profile orch new writes
            self.arch = ""
            raise self.error("general.architecture", problem)
        self.arch = arch

    def error(self, key: str, problem: str) -> GgufError:
        return GgufError(self.path, key, problem)

    def integer(self, key: str, default: int | None = None, minimum: int = 0) -> int:
        """``ARCH.KEY`` as an integer ≥ ``minimum``; ``default`` when absent (None: required)."""
        full = f"{self.arch}.{key}"
        raw = self.header.metadata.get(full)
        if raw is None:
            if default is None:
                raise self.error(full, "missing (needed to size the model)")
            return default
        value = _scalar(raw)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(full, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.error(full, f"is {value}, must be at least {minimum}")
        return value


def architecture_from_gguf(header: GgufHeader) -> Architecture:
    """Build architecture facts from a GGUF header (what ``orch new --from-gguf`` writes).

    Raises GgufError naming the file and the key when a value the memory model needs is
    missing, zero where it must not be, or not a number.
    """
    meta = header.metadata
    m = _Meta(header)
    arch = m.arch
    n_embd = m.integer("embedding_length", minimum=1)
    n_head = m.integer("attention.head_count", minimum=1)
    n_layer = m.integer("block_count", minimum=1)
    head_dim = m.integer("attention.key_length", default=0) or n_embd // n_head
    if head_dim < 1:
        raise m.error(f"{arch}.attention.head_count", f"{n_head} heads exceed {n_embd} dimensions")
    tokens = meta.get("tokenizer.ggml.tokens")
    embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    vocab = len(tokens) if isinstance(tokens, list) else (embd.shape[1] if embd else 0)
    if vocab < 1:
        raise m.error("tokenizer.ggml.tokens", "no vocabulary (and no token_embd.weight)")
    moe = None
    if m.integer("expert_count", default=0):
        moe = Moe(
            n_expert=m.integer("expert_count"),
            n_expert_used=m.integer("expert_used_count", default=0) or 1,
            n_ff_exp=(
                m.integer("expert_feed_forward_length", default=0)
                or m.integer("feed_forward_length", minimum=1)
            ),
            n_ff_shexp=m.integer("expert_shared_feed_forward_length", default=0),
        )
    linear = None
    if m.integer("full_attention_interval", default=0):
        rank = m.integer("ssm.time_step_rank", minimum=1)
        linear = LinearAttention(
            full_attention_interval=m.integer("full_attention_interval"),
            n_key_heads=m.integer("ssm.group_count", minimum=1),
            n_value_heads=rank,
            key_head_dim=m.integer("ssm.state_size", minimum=1),
            value_head_dim=m.integer("ssm.inner_size", minimum=rank) // rank,
            conv_kernel=m.integer("ssm.conv_kernel", default=0) or 4,
        )
    total = sum(t.nbytes for t in header.tensors)
    params = sum(_elements(t.shape) for t in header.tensors)
    # a GGUF's name is anyone's text: one line, no control characters
    name = meta.get("general.name")
    name = escape_controls(name, keep="") if isinstance(name, str) else ""
    try:
        return Architecture(
            description=name or f"{arch} from GGUF ({total} bytes)",
            gguf_arch=arch,
            params_b=max(params / 1e9, 1e-6),
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=m.integer("attention.head_count_kv", default=0) or n_head,
            head_dim=head_dim,
            n_ff=m.integer("feed_forward_length", default=0) if moe is None else 0,
            vocab=vocab,
            ctx_train=m.integer("context_length", default=0) or 4096,
            tied_embeddings=not any(t.name == "output.weight" for t in header.tensors),
            sliding_window=m.integer("attention.sliding_window", default=0),
            moe=moe,
            linear_attention=linear,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise m.error(arch, f"not a model orch can size ({problems})") from None


def _elements(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out
