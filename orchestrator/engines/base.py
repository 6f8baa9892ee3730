"""The interface every engine adapter implements, and the capabilities it reports by name."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from orchestrator.errors import OrchError
from orchestrator.flagcatalogue import FlagCatalogue, load_catalogue
from orchestrator.memory.breakdown import MemoryEstimate
from orchestrator.memory.tensors import Tensor
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import (
    LlamaEngine,
    ModelProfile,
    VllmEngine,
)

EngineSettings = LlamaEngine | VllmEngine
"""A profile's ``[engine]`` table, whichever engine it names."""

Fits = Callable[[ResolvedProfile], bool]
"""Whether a variant of a profile fits its hardware (the planner supplies it)."""


class ArgsError(OrchError):
    """An engine argument orch cannot interpret."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True)
class EngineCaps:
    """What one engine at one version does, where orch has to choose."""

    load_mode_flag: bool = False
    """``--load-mode`` (upstream since b10114); otherwise ``--no-mmap`` / ``--mlock``."""
    grouped_expert_routing: bool = False
    """ik_llama.cpp's ``-ger``."""
    cache_ram: bool = False
    """``--cache-ram`` (the server's prompt cache in RAM)."""
    default_cache_ram_mib: int = 0
    default_parallel: int = 1
    """Slots when ``-np`` is not given."""
    ngl_counts_output: bool = False
    """Upstream: ``-ngl N`` = output layer + last N-1 blocks. ik_llama.cpp: the last N blocks."""
    n_cpu_moe_from_end: bool = False
    """ik_llama.cpp's ``--n-cpu-moe N`` takes the last N MoE layers, upstream blocks 0..N-1."""
    n_cpu_moe_multi_gpu: bool = False
    """orch models how ``--n-cpu-moe`` shares N out over several GPUs."""
    repacks_cpu_weights: bool = False
    """A CPU-only build repacks some weight types into a second host buffer."""
    kv_stream_per_slot: bool = False
    """``-np N`` without ``-kvu`` gives each slot its own KV stream (upstream); otherwise the
    slots share one cache of ``ctx`` cells (ik_llama.cpp)."""
    graph_residuals: int = 4
    """n_embd-wide activations the compute graph keeps beside its largest phase."""
    fused_moe: bool = False
    """Fused MoE up/gate (ik_llama.cpp's ``-fmoe``, on by default), and the experts' weighting
    fused with their sum: three graph nodes on the experts' device whatever ``n_expert_used``."""
    fused_gated_delta_net: bool = True
    """Gated DeltaNet decode runs as one fused op (upstream builds before b8100 run its update
    on the CPU as about 20 small ops; ik_llama.cpp has its own CPU delta-net)."""
    fa_f16_pool: bool = False
    """Flash attention converts a quantized K / V to F16 in the CUDA pool at run time
    (ik_llama.cpp); upstream reserves that room in the compute buffer."""
    device_none: bool = False
    """``--device none`` keeps a CUDA build off every GPU (upstream); ik_llama.cpp's
    ``--device`` takes no ``none``, so orch hides the GPUs with ``CUDA_VISIBLE_DEVICES=``."""
    cpu_process_base_mib: int = 24
    """RSS of a CPU-only server beyond its weight, KV, compute and output buffers."""
    kqv_work_buffer: bool = True
    """Without flash attention the CPU backend converts the KQ scores for ``V x KQ`` in a work
    buffer (ik_llama.cpp's iqk_mul_mat_4d multiplies F16 by F32 directly: none)."""


@dataclass(frozen=True)
class OffGpu:
    """What keeps an engine off every GPU: its ``--device`` value and environment variables."""

    device: str = ""
    """``--device`` (empty: none rendered)."""
    env: tuple[tuple[str, str], ...] = ()


def build_number(version: str) -> int | None:
    """``b6123`` or ``6123`` → 6123; ``latest`` → None (newest known behaviour)."""
    match = re.fullmatch(r"b?(\d+)", version.strip())
    return int(match.group(1)) if match else None


class EngineAdapter(ABC):
    """Everything that differs between engines, behind one interface.

    Class attributes name the engine's fixed traits; methods take the profile's settings.
    """

    kind: ClassVar[str]
    """``engine.kind`` in a profile, and the name of its flag catalogue."""
    label: ClassVar[str]
    """The engine's name in messages."""
    template: ClassVar[str]
    """The Jinja template (under ``templates/``) rendering the engine's arguments."""
    api_key_variable: ClassVar[str | None]
    """The environment variable the server reads its API key from (None: it reads none)."""
    api_key_file_flag: ClassVar[bool]
    """The server takes ``--api-key-file``; otherwise orch reads the file into the variable."""
    key_file_comments_are_keys: ClassVar[bool] = False
    """The server takes ``#`` lines of a key file as keys too (orch refuses such files)."""
    reads_gguf: ClassVar[bool]
    """The model is a GGUF file orch reads and mounts; otherwise a repo the engine fetches."""
    reports_timings: ClassVar[bool]
    """Replies carry the engine's own ``timings``; otherwise orch times a streamed reply."""
    places_layers: ClassVar[bool]
    """Placement is per layer and tensor (``-ngl``, ``-ot``), so ``placement = "auto"`` applies."""
    help_lists_flags: ClassVar[bool]
    """``BINARY --help`` is cheap and lists the flags, so ``orch up`` checks them against it."""
    model_id_flag: ClassVar[str]
    """The flag naming the model id the server reports (orch renders the profile name)."""

    @property
    def catalogue(self) -> FlagCatalogue:
        """Every flag the engine's server accepts, in alias groups."""
        return load_catalogue(self.kind)

    def unconfirmed_flags(self, flags: Iterable[str], help_spellings: Collection[str]) -> list[str]:
        """The flags of ``flags`` that a build's ``--help`` (its ``help_spellings``) refutes.

        A flag counts as confirmed when the help lists any of its alias spellings, or when
        the catalogue marks it hidden: the engine's parser takes it though its ``--help``
        never lists it, so the help's silence proves nothing (should an engine build lack
        it after all, the engine's own "unknown argument" exit reports it).
        """
        out = []
        for name in flags:
            flag = self.catalogue.get(name)
            if flag is not None and flag.hidden:
                continue
            spellings = flag.spellings if flag is not None else (name,)
            if not any(s in help_spellings for s in spellings):
                out.append(name)
        return out

    @abstractmethod
    def caps(self, version: str) -> EngineCaps:
        """Capabilities of the engine at ``version`` (``latest`` or a build number)."""

    def settings_problems(self, engine: EngineSettings) -> list[str]:
        """Settings of the profile the engine cannot honour, as ``key: message`` lines."""
        return []

    def template_context(self, engine: EngineSettings) -> dict[str, Any]:
        """Variables the template needs beyond the plan's (``e`` and ``caps`` at least)."""
        return {"e": engine, "caps": self.caps(engine.version)}

    def own_model_id(self, engine: EngineSettings) -> str | None:
        """The model id the profile sets itself: :attr:`model_id_flag` in ``extra_args``.

        Any spelling of the flag counts, ``--flag=value`` too; None when the profile sets none.
        """
        args = list(engine.extra_args)
        spellings = self.catalogue.aliases(self.model_id_flag)
        for i, arg in enumerate(args):
            flag, eq, value = arg.partition("=")
            if flag in spellings:
                return value if eq else (args[i + 1] if i + 1 < len(args) else "")
        return None

    def model_id(self, profile: ModelProfile, name: str) -> str:
        """The model id the engine reports: the profile's own, else the profile name ``name``.

        Unless the profile sets one, orch renders :attr:`model_id_flag` with the profile name,
        so clients see a real name rather than a file path.
        """
        own = self.own_model_id(profile.engine)
        return name if own is None else own

    def model_name(self, profile: ModelProfile, name: str) -> str:
        """The ``model`` field orch's requests send: :meth:`model_id`."""
        return self.model_id(profile, name)

    def served_name(self, profile: ModelProfile, name: str) -> str | None:
        """A name ``/v1/models`` must list before the engine counts as ready (None: any)."""
        return None

    @abstractmethod
    def slots(self, engine: EngineSettings) -> int:
        """Requests the engine serves at once."""

    @abstractmethod
    def request_tokens(self, engine: EngineSettings) -> int:
        """The most tokens (prompt + generated) one request may hold."""

    def auto_placed(self, engine: EngineSettings) -> bool:
        """Whether orch chooses the placement (``placement = "auto"``)."""
        return False

    @abstractmethod
    def estimate(
        self,
        resolved: ResolvedProfile,
        tensors: Sequence[Tensor],
        gpus: Sequence[tuple[str, int]],
    ) -> MemoryEstimate:
        """Memory per device of the profile on ``gpus`` (``(name, vram_mib)``)."""

    def capacity_problems(self, engine: EngineSettings, memory: MemoryEstimate) -> list[str]:
        """Why the plan cannot serve what it promises even when every device fits."""
        return []

    def suggestions(
        self, resolved: ResolvedProfile, memory: MemoryEstimate, *, over_budget: bool, fits: Fits
    ) -> list[str]:
        """Setting changes that would make the plan fit or serve what it promises."""
        return []

    def plan_warnings(self, profile: ModelProfile, *, devices: str, podman: bool) -> list[str]:
        """Warnings ``plan`` shows for this profile (``devices``: the GPUs it is limited to)."""
        return []

    def stays_off_gpu(self, engine: EngineSettings) -> bool:
        """Whether the profile places nothing on a GPU, so the engine must not open one."""
        return False

    def off_gpu(self, engine: EngineSettings, *, gpus_allowed: bool = True) -> OffGpu | None:
        """What keeps the engine off every GPU, or None when it may use them.

        It must stay off when the profile may use no GPU (``gpus = []``: ``gpus_allowed``
        false), or when :meth:`stays_off_gpu`.
        """
        return None

    def device_problems(
        self, engine: EngineSettings, allowed: Sequence[str], why: str
    ) -> list[str]:
        """Settings placing work on a GPU the profile may not use (``allowed``: those it may).

        The plan counts only ``allowed`` GPUs, so anything the engine would put elsewhere would
        be counted nowhere; ``why`` says where ``allowed`` comes from.
        """
        return []

    def process_env(self, env: Mapping[str, str], gpu_indices: Sequence[int]) -> dict[str, str]:
        """The environment of a process run, restricted to ``gpu_indices`` when given."""
        return dict(env)

    def locks_memory(self, engine: EngineSettings) -> bool:
        """Whether the engine locks its weights in RAM (the host must allow it)."""
        return False
