"""llama-server adapters: upstream llama.cpp and ik_llama.cpp."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from orchestrator.ecmaregex import PatternError, compile_pattern
from orchestrator.engines.base import (
    ArgsError,
    EngineAdapter,
    EngineCaps,
    EngineSettings,
    Fits,
    OffGpu,
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
FUSED_GDN_SINCE_BUILD = 8100
"""First upstream build whose Qwen3-Next / Qwen3.5 decode uses the fused Gated DeltaNet op
(the op landed in PR #19504, b7990-ish; the graphs adopted it in the following weeks;
b11434's ``llama_context`` enables ``fused_gdn_ar`` by default). ``latest`` counts as fused."""


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
    model_id_flag: ClassVar[str] = "--alias"

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

    def slots(self, engine: EngineSettings) -> int:
        """``-np``, else the engine's default."""
        e = llama_settings(engine)
        return e.parallel or self.caps(e.version).default_parallel

    def request_tokens(self, engine: EngineSettings) -> int:
        """``ctx`` split between the slots, unless the KV cache is unified.

        It is when orch leaves ``parallel`` to the engine.
        """
        e = llama_settings(engine)
        unified = e.kv_unified or e.parallel is None
        return e.ctx // max(1 if unified else self.slots(e), 1)

    def auto_placed(self, engine: EngineSettings) -> bool:
        """``placement = "auto"``."""
        return llama_settings(engine).placement == "auto"

    def locks_memory(self, engine: EngineSettings) -> bool:
        """``load_mode = "mlock"``."""
        return llama_settings(engine).load_mode == "mlock"

    def stays_off_gpu(self, engine: EngineSettings) -> bool:
        """``gpu_layers = 0`` and no ``-ot`` rule to a GPU.

        A CUDA build would still open the first GPU it sees for such a command line (a CUDA
        context, and a compute buffer for the large batches it offloads), so orch renders what
        keeps it off the GPUs instead (:meth:`off_gpu`) and sizes it as a CPU-only process.
        """
        e = llama_settings(engine)
        return e.gpu_layers == 0 and all(r.device == CPU for r in e.override_tensors)

    def off_gpu(self, engine: EngineSettings, *, gpus_allowed: bool = True) -> OffGpu | None:
        """``--device none`` where the engine takes it, else ``CUDA_VISIBLE_DEVICES=``."""
        if gpus_allowed and not self.stays_off_gpu(engine):
            return None
        if self.caps(engine.version).device_none:
            return OffGpu(device="none")
        return OffGpu(env=(("CUDA_VISIBLE_DEVICES", ""),))

    def device_problems(
        self, engine: EngineSettings, allowed: Sequence[str], why: str
    ) -> list[str]:
        """``-ot`` rules, ``gpu_layers``, ``main_gpu`` or ``tensor_split`` beyond ``allowed``."""
        e = llama_settings(engine)
        problems = []
        for i, rule in enumerate(e.override_tensors):
            if rule.device != CPU and rule.device not in allowed:
                problems.append(
                    f"engine.override_tensors[{i}].device: {rule.device} is not available to "
                    f"this profile ({why}); the plan could not count what it holds"
                )
        if not allowed and e.gpu_layers:
            problems.append(
                f"engine.gpu_layers: {e.gpu_layers} layers offloaded, but this profile has no "
                f"GPU ({why}); set gpu_layers = 0 or give it a GPU"
            )
        if e.main_gpu is not None and f"CUDA{e.main_gpu}" not in allowed:
            problems.append(f"engine.main_gpu: GPU {e.main_gpu} is not available ({why})")
        if e.tensor_split and len(e.tensor_split) > len(allowed):
            problems.append(
                f"engine.tensor_split: {len(e.tensor_split)} parts for {len(allowed)} GPU(s) "
                f"this profile may use ({why})"
            )
        return problems

    def plan_warnings(self, profile: ModelProfile, *, devices: str, podman: bool) -> list[str]:
        """``-ot`` patterns with a repeat inside a repeat: slow in the engine's ``std::regex``."""
        return [
            f"engine.override_tensors[{i}].pattern {rule.pattern!r}: a repeat inside a repeat; "
            "the engine's std::regex backtracks and may take very long on it at load"
            for i, rule in enumerate(llama_settings(profile.engine).override_tensors)
            if compile_pattern(rule.pattern).nested_repeat
        ]

    # ------------------------------------------------------------ memory

    def memory_config(
        self,
        engine: EngineSettings,
        hardware: HardwareProfile,
        gpus: Sequence[tuple[str, int]],
        moe_layers: list[int],
    ) -> LlamaConfig:
        """The memory model's view of a llama-server profile on ``gpus``.

        A profile that stays off the GPUs (:meth:`stays_off_gpu`) is sized on none of them.
        """
        e = llama_settings(engine)
        caps = self.caps(e.version)
        if self.stays_off_gpu(e):
            gpus = ()
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
            kv_unified=e.kv_unified or e.parallel is None or not caps.kv_stream_per_slot,
            # the CPU backend repacks some types when no GPU takes the host weights
            repack_types=REPACK_AVX2 if caps.repacks_cpu_weights and not gpus else (),
            **self._graph(caps),
        )

    @staticmethod
    def _graph(caps: EngineCaps) -> dict[str, Any]:
        """The memory model's knobs for this engine's compute graph and process."""
        return {
            "residuals": caps.graph_residuals,
            "fused_moe": caps.fused_moe,
            "cpu_base_mib": caps.cpu_process_base_mib,
            "kqv_work": caps.kqv_work_buffer,
            "fa_f16_pool": caps.fa_f16_pool,
        }

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

        Every flag of the engine's catalogue is taken, in any of its spellings, with as many
        values as the catalogue says it takes (``--flag=value`` works too). ``repack_types``:
        the weight types this host's CPU backend repacks (``REPACK_AVX2`` on x86-64);
        ``--no-repack`` turns repacking off. ``--device`` keeps only the GPUs it names
        (upstream's ``none``: no GPU); every other GPU of ``gpus`` is opened, even by ``-ngl 0``.
        """
        catalogue = self.catalogue
        caps = self.caps("latest")
        given_gpus = bool(gpus)
        values: dict[str, str] = {}
        switches: set[str] = set()
        overrides: list[tuple[str, str]] = []

        def key(spelling: str) -> str:
            return catalogue.canonical(spelling)

        i = 0
        while i < len(args):
            raw = args[i]
            name, eq, inline = raw.partition("=")
            if not name.startswith("-"):
                raise ArgsError(f"unexpected argument {raw!r} (llama-server takes no positionals)")
            if name.startswith("--"):
                name = name.replace("_", "-")  # both engines read --ctx_size as --ctx-size
            flag = catalogue.get(name)
            if flag is None:
                raise ArgsError(f"{name} is not a {self.label} llama-server flag")
            count = len(flag.values)
            if count == 0:
                if eq:
                    raise ArgsError(f"{name} takes no value")
                switches.add(flag.canonical)
                if flag.canonical == key("--cpu-moe"):
                    overrides.append((EXPERT_REGEX, CPU))
                i += 1
                continue
            taken = [inline] if eq else []
            need = count - len(taken)
            if i + 1 + need > len(args):
                raise ArgsError(f"{name} needs " + ("a value" if count == 1 else f"{count} values"))
            taken += args[i + 1 : i + 1 + need]
            i += 1 + need
            value = taken[0]
            if flag.canonical == key("--override-tensor"):
                overrides.extend(_override_rules(flag.canonical, value))
            elif flag.canonical == key("--n-cpu-moe"):
                count_moe = _integer(name, value, 0)
                overrides.extend(n_cpu_moe_rules(count_moe, moe_layers, caps.n_cpu_moe_from_end))
            values[flag.canonical] = value

        def given(spelling: str) -> str | None:
            return values.get(key(spelling))

        def number(spelling: str, default: int, minimum: int = 0) -> int:
            value = given(spelling)
            return default if value is None else _integer(spelling, value, minimum)

        def switched(spelling: str) -> bool:
            return key(spelling) in switches

        for spelling in ("--cache-type-k", "--cache-type-v"):
            kv_type = given(spelling)
            if kv_type is not None and kv_type not in KV_CACHE_TYPES:
                raise ArgsError(
                    f"{spelling}: {kv_type!r} is not one of {', '.join(KV_CACHE_TYPES)}"
                )
        ngl_raw = given("--n-gpu-layers") or "-1"
        ngl = -1 if ngl_raw in ("all", "auto", "-1") else _integer("--n-gpu-layers", ngl_raw, 0)
        # --load-mode mlock reads into locked host buffers without mmap (llama_model_loader's
        # use_mmap is true only for auto, mmap and mmap+mlock); orch's "mlock" is mmap+mlock.
        load_mode = {
            "none": "no-mmap",
            "dio": "no-mmap",
            "mlock": "no-mmap",
            "mmap+mlock": "mlock",
        }.get(given("--load-mode") or "", "mmap")
        if switched("--no-mmap"):
            load_mode = "no-mmap"
        if switched("--mlock"):
            load_mode = "mlock"
        split_raw = given("--tensor-split")
        split = (
            tuple(_fraction("--tensor-split", x) for x in split_raw.split(",")) if split_raw else ()
        )
        # -np auto (the default): upstream's 4 slots share one unified KV stream; -np N, one
        # stream each.
        parallel_raw = given("--parallel") or "-1"
        auto_parallel = parallel_raw in ("-1", "auto")
        kv_unified = auto_parallel or switched("--kv-unified") or not caps.kv_stream_per_slot
        if switched("--no-kv-unified"):
            kv_unified = False
        flash = (given("--flash-attn") or "auto") not in ("off", "0")
        if switched("--no-flash-attn"):  # ik_llama.cpp's -no-fa
            flash = False
        if switched("--no-repack"):
            repack_types = ()
        visible = given("--device")
        if visible is not None:  # the GPUs the engine may use; "none" keeps it off them all
            names = [] if visible == "none" else visible.split(",")
            unknown = [n for n in names if n not in gpus]
            if unknown:
                here = ", ".join(gpus) or "none"
                raise ArgsError(f"--device: {', '.join(unknown)} is not a GPU here ({here})")
            keep = [i for i, g in enumerate(gpus) if g in names]
            gpus = tuple(gpus[i] for i in keep)
            gpu_vram_mib = tuple(gpu_vram_mib[i] for i in keep)
        devices = (CPU, *gpus)
        for pattern, device in overrides:
            if device not in devices:
                hint = "" if given_gpus else "; pass --hardware to plan GPUs"
                raise ArgsError(
                    f"{key('--override-tensor')} '{pattern}={device}': {device!r} is not a "
                    f"device here (valid: {', '.join(devices)}{hint})"
                )
        return LlamaConfig(
            ctx=number("--ctx-size", 0),
            ubatch=number("--ubatch-size", 512, minimum=1),
            batch=number("--batch-size", 2048, minimum=1),
            gpu_layers=ngl,
            overrides=tuple(overrides),
            cache_type_k=given("--cache-type-k") or "f16",
            cache_type_v=given("--cache-type-v") or "f16",
            flash_attn=flash,
            load_mode=load_mode,
            parallel=caps.default_parallel if auto_parallel else number("--parallel", 1, minimum=1),
            tensor_split=split,
            cache_ram_mib=number("--cache-ram", caps.default_cache_ram_mib, minimum=-1),
            gpus=gpus,
            gpu_vram_mib=gpu_vram_mib,
            cuda_context_mib=cuda_context_mib,
            split_mode=given("--split-mode") or "layer",
            ngl_counts_output=caps.ngl_counts_output,
            kv_unified=kv_unified,
            repack_types=repack_types if caps.repacks_cpu_weights else (),
            **self._graph(caps),
        )


INT32_MAX = 2**31 - 1
"""llama-server reads its integer flags with ``std::stoi``."""


def _integer(flag: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArgsError(f"{flag}: expected an integer, got {value!r}") from None
    if not minimum <= number <= INT32_MAX:
        raise ArgsError(f"{flag}: {number} is out of range ({minimum}..{INT32_MAX})")
    return number


def _fraction(flag: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ArgsError(f"{flag}: expected numbers, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ArgsError(f"{flag}: {value!r} is not a finite number >= 0")
    return number


def _override_rules(flag: str, value: str) -> list[tuple[str, str]]:
    """``-ot PATTERN=DEVICE,...``, each pattern checked the way the engine reads it.

    Both engines compile the patterns with C++ ``std::regex`` (ECMAScript).
    """
    rules = []
    for rule in value.split(","):
        pattern, sep, device = rule.partition("=")
        if not sep:
            raise ArgsError(f"{flag} {rule!r}: expected PATTERN=DEVICE")
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise ArgsError(f"{flag} {pattern!r}: {exc}") from None
        rules.append((pattern, device))
    return rules


class LlamaCppAdapter(LlamaServerAdapter):
    """Upstream llama.cpp's llama-server."""

    kind: ClassVar[str] = "llama.cpp"
    label: ClassVar[str] = "llama.cpp"
    api_key_variable: ClassVar[str | None] = "LLAMA_API_KEY"

    def caps(self, version: str) -> EngineCaps:
        """``--load-mode`` and 4 auto slots from b10114 on, fused Gated DeltaNet from b8100."""
        build = build_number(version)
        new = build is None or build >= LOAD_MODE_SINCE_BUILD
        return EngineCaps(
            load_mode_flag=new,
            cache_ram=True,
            default_cache_ram_mib=8192,
            default_parallel=4 if new else 1,
            ngl_counts_output=True,
            fused_gated_delta_net=build is None or build >= FUSED_GDN_SINCE_BUILD,
            device_none=True,
            n_cpu_moe_multi_gpu=True,
            repacks_cpu_weights=True,
            kv_stream_per_slot=True,
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
            # measured on CPU (benchmarks/data/cpu-ik-llama-server.csv): its graph keeps two
            # residual activations, its fused moe_up_gate one product per expert
            # (llm_build_moe_ffn), iqk_mul_mat_4d needs no KQ conversion (ggml.c,
            # ggml_compute_forward_mul_mat), and its larger binary adds ~18 MiB of RSS
            graph_residuals=2,
            fused_moe=True,
            cpu_process_base_mib=42,
            kqv_work_buffer=False,
            # its flash attention takes the F16 copies of a quantized K / V from the CUDA pool
            # at run time (launch_fattn's ggml_cuda_pool_alloc)
            fa_f16_pool=True,
        )
