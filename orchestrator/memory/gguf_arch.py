"""Architecture facts from GGUF metadata, and a llama-server argv parsed into a LlamaConfig."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from orchestrator.ecmaregex import PatternError, compile_pattern
from orchestrator.engines import canonical_flag, known_flags
from orchestrator.errors import OrchError
from orchestrator.ggml_types import KV_CACHE_TYPES
from orchestrator.memory.llama import CPU, EXPERT_REGEX, LlamaConfig, n_cpu_moe_rules
from orchestrator.memory.tensors import GgufHeader
from orchestrator.profiles.schema import Architecture, LinearAttention, Moe
from orchestrator.textsafe import escape_controls


class ArgsError(OrchError):
    """A llama-server argument orch cannot interpret."""

    exit_code = 2


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
    name = escape_controls(str(meta.get("general.name", "")), keep="")
    return Architecture(
        description=name or f"{arch} from GGUF ({total} bytes)",
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


_BOOL_FLAGS = {
    "--cpu-moe",
    "--kv-unified",
    "--no-mmap",
    "--mlock",
    "--jinja",
    "--metrics",
    "--no-kv-unified",
    "--grouped-expert-routing",
    "--no-warmup",
    "--verbose",
    "--no-webui",
    "--slots",
    "--no-slots",
    "--cont-batching",
    "--no-cont-batching",
    "--embedding",
    "--reranking",
    "--no-perf",
    "--swa-full",
    "--no-op-offload",
    "--check-tensors",
    "--mmap",
    "--no-kv-offload",
    "-nkvo",
    "--repack",
    "--no-repack",
    "-nr",
    "--no-host",
}


INT32_MAX = 2**31 - 1
"""llama-server reads its integer flags with ``std::stoi``."""


def _integer(flag: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArgsError(f"{flag}: expected an integer, got {text!r}") from None
    if not minimum <= value <= INT32_MAX:
        raise ArgsError(f"{flag}: {value} is out of range ({minimum}..{INT32_MAX})")
    return value


def _fraction(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgsError(f"{flag}: expected numbers, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ArgsError(f"{flag}: {text!r} is not a finite number >= 0")
    return value


def _override_rules(value: str, gpus: tuple[str, ...]) -> list[tuple[str, str]]:
    """``-ot PATTERN=DEVICE,...``: ECMAScript patterns, devices this command line has."""
    rules = []
    devices = (CPU, *gpus)
    for rule in value.split(","):
        pattern, sep, device = rule.partition("=")
        if not sep:
            raise ArgsError(f"--override-tensor {rule!r}: expected PATTERN=DEVICE")
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise ArgsError(f"--override-tensor {pattern!r}: {exc}") from None
        if device not in devices:
            where = "; pass --hardware to plan GPUs" if not gpus else ""
            raise ArgsError(
                f"--override-tensor {rule!r}: {device!r} is not a device here "
                f"(valid: {', '.join(devices)}{where})"
            )
        rules.append((pattern, device))
    return rules


def parse_llama_args(
    args: Sequence[str],
    *,
    gpus: tuple[str, ...],
    gpu_vram_mib: tuple[int, ...],
    cuda_context_mib: int,
    moe_layers: list[int],
    repack_types: tuple[str, ...] = (),
) -> LlamaConfig:
    """Interpret the memory-relevant flags of a llama-server command line.

    ``repack_types``: the weight types this host's CPU backend repacks (``REPACK_AVX2`` on
    x86-64); ``--no-repack`` turns repacking off.
    """
    known = known_flags("llama.cpp")
    values: dict[str, str] = {}
    flags: set[str] = set()
    overrides: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        raw = args[i]
        name, eq, inline = raw.partition("=")
        if not name.startswith("-"):
            raise ArgsError(f"unexpected argument {raw!r} (llama-server takes no positionals)")
        flag = canonical_flag(name)
        if name not in known and flag not in known and name not in _BOOL_FLAGS:
            raise ArgsError(f"{name} is not a llama-server flag")
        if flag in _BOOL_FLAGS or name in _BOOL_FLAGS:
            flags.add(flag)
            if flag == "--cpu-moe":
                overrides.append((EXPERT_REGEX, CPU))
            i += 1
            continue
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise ArgsError(f"{name} needs a value")
            value = args[i + 1]
            i += 2
        if flag == "--override-tensor":
            overrides.extend(_override_rules(value, gpus))
        elif flag == "--n-cpu-moe":
            overrides.extend(n_cpu_moe_rules(_integer(flag, value, 0), moe_layers))
        values[flag] = value

    def number(flag: str, default: int, minimum: int = 0) -> int:
        return _integer(flag, values[flag], minimum) if flag in values else default

    for flag in ("--cache-type-k", "--cache-type-v"):
        if flag in values and values[flag] not in KV_CACHE_TYPES:
            raise ArgsError(f"{flag}: {values[flag]!r} is not one of {', '.join(KV_CACHE_TYPES)}")
    ngl_raw = values.get("--n-gpu-layers", "-1")
    ngl = -1 if ngl_raw in ("all", "auto", "-1") else _integer("--n-gpu-layers", ngl_raw, 0)
    # --load-mode mlock reads into locked host buffers without mmap (llama_model_loader's
    # use_mmap is true only for auto, mmap and mmap+mlock); orch's "mlock" is mmap+mlock.
    load_mode = {
        "none": "no-mmap",
        "dio": "no-mmap",
        "mlock": "no-mmap",
        "mmap+mlock": "mlock",
    }.get(values.get("--load-mode", ""), "mmap")
    if "--no-mmap" in flags:
        load_mode = "no-mmap"
    if "--mlock" in flags:
        load_mode = "mlock"
    split = (
        tuple(_fraction("--tensor-split", x) for x in values["--tensor-split"].split(","))
        if ("--tensor-split" in values)
        else ()
    )
    # -np auto (the default) means 4 slots sharing one unified KV stream; -np N, one stream each.
    parallel_raw = values.get("--parallel", "-1")
    auto_parallel = parallel_raw in ("-1", "auto")
    kv_unified = auto_parallel or "--kv-unified" in flags
    if "--no-kv-unified" in flags:
        kv_unified = False
    if "--no-repack" in flags or "-nr" in flags:
        repack_types = ()
    return LlamaConfig(
        ctx=number("--ctx-size", 0),
        ubatch=number("--ubatch-size", 512, minimum=1),
        batch=number("--batch-size", 2048, minimum=1),
        gpu_layers=ngl,
        overrides=tuple(overrides),
        cache_type_k=values.get("--cache-type-k", "f16"),
        cache_type_v=values.get("--cache-type-v", "f16"),
        flash_attn=values.get("--flash-attn", "auto") != "off",
        load_mode=load_mode,
        parallel=4 if auto_parallel else number("--parallel", 4, minimum=1),
        tensor_split=split,
        cache_ram_mib=number("--cache-ram", 8192, minimum=-1),
        gpus=gpus,
        gpu_vram_mib=gpu_vram_mib,
        cuda_context_mib=cuda_context_mib,
        split_mode=values.get("--split-mode", "layer"),
        kv_unified=kv_unified,
        repack_types=repack_types,
    )
