"""llama-server adapters: upstream llama.cpp and ik_llama.cpp."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from orchestrator.engines.base import (
    ArgsError,
    EngineAdapter,
    EngineCaps,
    EngineSettings,
    Fits,
    build_number,
)
from orchestrator.ggml_types import KV_CACHE_TYPES
from orchestrator.memory.breakdown import MemoryEstimate
from orchestrator.memory.llama import (
    CPU,
    EXPERT_REGEX,
    REPACK_AVX2,
    LlamaConfig,
    estimate_llama,
    n_cpu_moe_rules,
)
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import HardwareProfile, LlamaEngine, ModelProfile
from orchestrator.search import largest, with_engine

LOAD_MODE_SINCE_BUILD = 10114
"""First upstream build with ``--load-mode`` (PR #20834); older builds take ``--mlock``."""

# llama-server flag aliases: canonical (long) spelling first.
LLAMA_ALIASES: dict[str, tuple[str, ...]] = {
    "--ctx-size": ("-c",),
    "--batch-size": ("-b",),
    "--ubatch-size": ("-ub",),
    "--threads": ("-t",),
    "--threads-batch": ("-tb",),
    "--n-gpu-layers": ("-ngl", "--gpu-layers"),
    "--override-tensor": ("-ot",),
    "--cpu-moe": ("-cmoe",),
    "--n-cpu-moe": ("-ncmoe",),
    "--cache-type-k": ("-ctk",),
    "--cache-type-v": ("-ctv",),
    "--flash-attn": ("-fa",),
    "--parallel": ("-np",),
    "--model": ("-m",),
    "--tensor-split": ("-ts",),
    "--split-mode": ("-sm",),
    "--main-gpu": ("-mg",),
    "--device": ("-dev",),
    "--kv-unified": ("-kvu",),
    "--cache-ram": ("-cram",),
    "--load-mode": ("-lm",),
    "--no-repack": ("-nr",),
    "--temp": ("--temperature",),
    "--seed": ("-s",),
    "--alias": ("-a",),
    "--grouped-expert-routing": ("-ger",),
}

CANONICAL: dict[str, str] = {
    alias: canonical for canonical, aliases in LLAMA_ALIASES.items() for alias in aliases
}


def canonical_flag(flag: str) -> str:
    """The long spelling of a llama-server flag (unknown flags are returned unchanged)."""
    return CANONICAL.get(flag, flag)


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


def llama_settings(engine: EngineSettings) -> LlamaEngine:
    """``engine`` as llama-server settings (a vLLM profile here is a bug in orch)."""
    if not isinstance(engine, LlamaEngine):
        raise TypeError(f"{engine.kind} is not a llama-server engine")
    return engine


class LlamaServerAdapter(EngineAdapter):
    """What llama.cpp's and ik_llama.cpp's ``llama-server`` share."""

    template: ClassVar[str] = "engines/llama-server.j2"
    api_key_file_flag: ClassVar[bool] = True
    reads_gguf: ClassVar[bool] = True
    reports_timings: ClassVar[bool] = True
    places_layers: ClassVar[bool] = True
    help_lists_flags: ClassVar[bool] = True

    def settings_problems(self, engine: EngineSettings) -> list[str]:
        """``-ger`` and ``--cache-ram`` where this engine (version) has none."""
        e = llama_settings(engine)
        caps = self.caps(e.version)
        problems = []
        if e.grouped_expert_routing and not caps.grouped_expert_routing:
            problems.append(
                f"engine.grouped_expert_routing: -ger is ik_llama.cpp only (engine is {e.kind})"
            )
        if e.cache_ram_mib is not None and not caps.cache_ram:
            problems.append(f"engine.cache_ram_mib: --cache-ram is not in {e.kind} {e.version}")
        return problems

    def template_context(self, engine: EngineSettings) -> dict[str, object]:
        """``e``, ``caps`` and the ``-ot`` value (rules joined in order)."""
        e = llama_settings(engine)
        return {
            **super().template_context(e),
            "override_tensors": ",".join(f"{r.pattern}={r.device}" for r in e.override_tensors),
        }

    def model_name(self, profile: ModelProfile, name: str) -> str:
        """The profile name (llama-server serves one model and ignores the field)."""
        return name

    def auto_placed(self, engine: EngineSettings) -> bool:
        """``placement = "auto"``."""
        return llama_settings(engine).placement == "auto"

    def locks_memory(self, engine: EngineSettings) -> bool:
        """``load_mode = "mlock"``."""
        return llama_settings(engine).load_mode == "mlock"

    # ------------------------------------------------------------ memory

    def memory_config(
        self,
        engine: EngineSettings,
        hardware: HardwareProfile,
        gpus: Sequence[tuple[str, int]],
        moe_layers: list[int],
    ) -> LlamaConfig:
        """The memory model's view of a llama-server profile on ``gpus``."""
        e = llama_settings(engine)
        caps = self.caps(e.version)
        overrides: list[tuple[str, str]] = [(r.pattern, r.device) for r in e.override_tensors]
        if e.cpu_moe:
            overrides.append((EXPERT_REGEX, CPU))
        if e.n_cpu_moe:
            overrides.extend(n_cpu_moe_rules(e.n_cpu_moe, moe_layers, caps.n_cpu_moe_from_end))
        flash = e.flash_attn != "off"
        if not gpus and e.flash_attn is None:
            flash = True
        return LlamaConfig(
            ctx=e.ctx,
            ubatch=e.ubatch,
            batch=e.batch,
            gpu_layers=-1 if e.gpu_layers is None else e.gpu_layers,
            overrides=tuple(overrides),
            cache_type_k=e.cache_type_k,
            cache_type_v=e.cache_type_v,
            flash_attn=flash,
            load_mode=e.load_mode or "mmap",
            parallel=e.parallel or caps.default_parallel,
            tensor_split=e.tensor_split,
            cache_ram_mib=(
                e.cache_ram_mib if e.cache_ram_mib is not None else caps.default_cache_ram_mib
            ),
            gpus=tuple(name for name, _ in gpus),
            gpu_vram_mib=tuple(v for _, v in gpus),
            cuda_context_mib=hardware.budget.cuda_context_mib,
            split_mode=e.split_mode or "layer",
            ngl_counts_output=caps.ngl_counts_output,
            # -np unset is llama-server's auto: 4 slots sharing one unified KV stream
            kv_unified=e.kv_unified or e.parallel is None,
            # the CPU backend repacks some types when no GPU takes the host weights
            repack_types=REPACK_AVX2 if caps.repacks_cpu_weights and not gpus else (),
        )

    def config_for(self, resolved: ResolvedProfile, gpus: Sequence[tuple[str, int]]) -> LlamaConfig:
        """:meth:`memory_config` of a resolved profile."""
        arch = resolved.architecture
        moe_layers = [i for i in range(arch.n_layer) if arch.is_moe_layer(i)]
        return self.memory_config(resolved.profile.engine, resolved.hardware, gpus, moe_layers)

    def estimate(
        self,
        resolved: ResolvedProfile,
        tensors: Sequence[Tensor],
        gpus: Sequence[tuple[str, int]],
    ) -> MemoryEstimate:
        """The llama.cpp memory model (``orchestrator.memory.llama``)."""
        return estimate_llama(resolved.architecture, tensors, self.config_for(resolved, gpus))

    def suggestions(
        self, resolved: ResolvedProfile, memory: MemoryEstimate, *, over_budget: bool, fits: Fits
    ) -> list[str]:
        """A smaller ctx, experts in RAM, or a q8_0 KV cache: whichever would fit."""
        if not over_budget:
            return []
        e = llama_settings(resolved.profile.engine)
        auto = e.placement == "auto"
        out: list[str] = []
        steps = largest(1, e.ctx // 256, lambda n: fits(with_engine(resolved, ctx=n * 256)))
        if steps:
            how = "with the placement orch chooses" if auto else "as configured"
            out.append(f"engine.ctx = {steps * 256} (the largest context that fits {how})")
        moe = resolved.architecture.moe is not None
        if moe and not auto and not e.cpu_moe:
            if fits(with_engine(resolved, cpu_moe=True, n_cpu_moe=None)):
                out.append("engine.cpu_moe = true (experts in host RAM, attention on the GPU)")
        if e.cache_type_k == "f16" and fits(
            with_engine(resolved, cache_type_k="q8_0", cache_type_v="q8_0")
        ):
            out.append('engine.cache_type_k = engine.cache_type_v = "q8_0" (halves the KV cache)')
        return out

    # ------------------------------------------------------------ argument parser

    def parse_args(
        self,
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
        known = self.catalogue.spellings
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
                for rule in value.split(","):
                    pattern, sep, device = rule.partition("=")
                    if not sep:
                        raise ArgsError(f"--override-tensor {rule!r}: expected PATTERN=DEVICE")
                    overrides.append((pattern, device))
            elif flag == "--n-cpu-moe":
                overrides.extend(n_cpu_moe_rules(int(value), moe_layers))
            values[flag] = value

        def number(flag: str, default: int) -> int:
            try:
                return int(values.get(flag, default))
            except ValueError:
                raise ArgsError(f"{flag}: expected an integer, got {values[flag]!r}") from None

        for flag in ("--cache-type-k", "--cache-type-v"):
            if flag in values and values[flag] not in KV_CACHE_TYPES:
                raise ArgsError(
                    f"{flag}: {values[flag]!r} is not one of {', '.join(KV_CACHE_TYPES)}"
                )
        ngl_raw = values.get("--n-gpu-layers", "-1")
        ngl = -1 if ngl_raw in ("all", "auto", "-1") else int(ngl_raw)
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
            tuple(float(x) for x in values["--tensor-split"].split(","))
            if ("--tensor-split" in values)
            else ()
        )
        # -np auto (the default): 4 slots sharing one unified KV stream; -np N, one stream each.
        parallel_raw = values.get("--parallel", "-1")
        auto_parallel = parallel_raw in ("-1", "auto")
        kv_unified = auto_parallel or "--kv-unified" in flags
        if "--no-kv-unified" in flags:
            kv_unified = False
        if "--no-repack" in flags or "-nr" in flags:
            repack_types = ()
        return LlamaConfig(
            ctx=number("--ctx-size", 0),
            ubatch=number("--ubatch-size", 512),
            batch=number("--batch-size", 2048),
            gpu_layers=ngl,
            overrides=tuple(overrides),
            cache_type_k=values.get("--cache-type-k", "f16"),
            cache_type_v=values.get("--cache-type-v", "f16"),
            flash_attn=values.get("--flash-attn", "auto") != "off",
            load_mode=load_mode,
            parallel=4 if auto_parallel else max(number("--parallel", 4), 1),
            tensor_split=split,
            cache_ram_mib=number("--cache-ram", 8192),
            gpus=gpus,
            gpu_vram_mib=gpu_vram_mib,
            cuda_context_mib=cuda_context_mib,
            split_mode=values.get("--split-mode", "layer"),
            kv_unified=kv_unified,
            repack_types=repack_types,
        )


class LlamaCppAdapter(LlamaServerAdapter):
    """Upstream llama.cpp's llama-server."""

    kind: ClassVar[str] = "llama.cpp"
    label: ClassVar[str] = "llama.cpp"
    api_key_variable: ClassVar[str | None] = "LLAMA_API_KEY"

    def caps(self, version: str) -> EngineCaps:
        """``--load-mode`` and 4 auto slots from b10114 on (and for ``latest``)."""
        build = build_number(version)
        new = build is None or build >= LOAD_MODE_SINCE_BUILD
        return EngineCaps(
            load_mode_flag=new,
            cache_ram=True,
            default_cache_ram_mib=8192,
            default_parallel=4 if new else 1,
            ngl_counts_output=True,
            n_cpu_moe_multi_gpu=True,
            repacks_cpu_weights=True,
        )


class IkLlamaCppAdapter(LlamaServerAdapter):
    """ik_llama.cpp's llama-server."""

    kind: ClassVar[str] = "ik_llama.cpp"
    label: ClassVar[str] = "ik_llama.cpp"
    api_key_variable: ClassVar[str | None] = None
    key_file_comments_are_keys: ClassVar[bool] = True

    def caps(self, version: str) -> EngineCaps:
        """Options of ik's own (``-ger``); its own -ngl and --n-cpu-moe counting."""
        return EngineCaps(
            grouped_expert_routing=True,
            cache_ram=True,
            default_cache_ram_mib=8192,
            default_parallel=1,
            n_cpu_moe_from_end=True,
        )
