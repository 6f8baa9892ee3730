"""Typed, frozen profile models.

Unknown keys are errors everywhere, and types are strict: ``ctx = true`` or ``port = "8001"``
is an error, not a conversion; floats must be finite; integers fit the engines' ``int``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from orchestrator.ecmaregex import PatternError, compile_pattern
from orchestrator.ggml_types import GGML_TYPES
from orchestrator.names import PROFILE_NAME as PROFILE_NAME

INT32_MAX = 2**31 - 1
"""llama-server reads integer flags with ``std::stoi``."""

CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
LoadMode = Literal["mmap", "no-mmap", "mlock"]
FlashAttn = Literal["on", "off", "auto"]
PosInt = Annotated[int, Field(gt=0, le=INT32_MAX)]
NonNegInt = Annotated[int, Field(ge=0, le=INT32_MAX)]


def _env_name(value: str) -> str:
    # the value is not echoed: a key pasted here by mistake must not reach the terminal
    if not value:
        raise ValueError("empty: name the environment variable")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(
            "not an environment variable name (letters, digits and _, not starting with a "
            "digit); name the variable, not its value"
        )
    return value


def _not_an_option(value: str) -> str:
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-', so it would be read as an option")
    return value


def _word(value: str) -> str:
    if not value:
        raise ValueError("empty")
    return _not_an_option(value)


EnvName = Annotated[str, AfterValidator(_env_name)]
"""An environment variable's name: it reaches systemd units and ``podman -e``."""
Word = Annotated[str, AfterValidator(_word)]
"""A value that lands where a command reads options (a positional slot, a flag's value)."""
MaybeWord = Annotated[str, AfterValidator(_not_an_option)]
"""A :data:`Word` that may be empty (unset)."""


class Strict(BaseModel):
    """Base: frozen, unknown keys rejected, strict types, finite floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _arrays_as_tuples(cls, data: Any) -> Any:
        """TOML arrays are lists; strict tuple fields take them as tuples (models are frozen)."""
        if isinstance(data, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data


# ---------------------------------------------------------------- hardware


class Cpu(Strict):
    """The host CPU."""

    model: str
    physical_cores: PosInt
    threads: PosInt
    l3_mib: NonNegInt = 0


class Memory(Strict):
    """Host RAM."""

    ram_gib: Annotated[float, Field(gt=0)]
    channels: NonNegInt = 0
    bandwidth_gbs: Annotated[float, Field(ge=0)] = 0.0


class NumaNode(Strict):
    """One NUMA node: its id, the CPUs it holds (``0-15,32-47``) and its RAM."""

    node: NonNegInt
    cpus: str
    ram_gib: Annotated[float, Field(gt=0)] | None = None

    @field_validator("cpus")
    @classmethod
    def _cpu_list(cls, value: str) -> str:
        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value):
            raise ValueError(f"{value!r} is not a CPU list like 0-15,32-47")
        return value


class Gpu(Strict):
    """One GPU as the engine numbers it (CUDA0 is index 0)."""

    index: NonNegInt
    name: str
    vram_mib: PosInt
    bandwidth_gbs: Annotated[float, Field(ge=0)] = 0.0
    """Memory bandwidth from the spec sheet (0: unknown); ranks placements by decode speed."""


class Budget(Strict):
    """What orch keeps free on each device."""

    gpu_headroom_mib: NonNegInt = 512
    ram_headroom_gib: Annotated[float, Field(ge=0)] = 8.0
    cuda_context_mib: NonNegInt = 590
    auto_margin_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.03
    """``placement = "auto"`` leaves this share of each GPU's budget free as well (the memory
    model is within 2 % of measured allocations)."""


ThreadRates = dict[str, dict[str, Annotated[float, Field(gt=0)]]]
"""Per engine kind (``llama.cpp``, ``ik_llama.cpp``), a rate per ggml weight type."""


def _known_type_keys(value: ThreadRates) -> ThreadRates:
    for engine, rates in value.items():
        if engine not in ("llama.cpp", "ik_llama.cpp"):
            raise ValueError(f"{engine!r} is not an engine (valid: llama.cpp, ik_llama.cpp)")
        for type_name in rates:
            if type_name.lower() not in GGML_TYPES:
                raise ValueError(f"{engine}.{type_name}: unknown ggml type")
    return {e: {t.lower(): r for t, r in rates.items()} for e, rates in value.items()}


class Decode(Strict):
    """Constants of the decode-speed model (``orchestrator.speed``).

    One token costs, on each GPU, its bytes at ``gpu_read_efficiency`` x the GPU's bandwidth
    plus ``gpu_node_us`` per graph node; on the host, its bytes at ``threads`` x the per-thread
    rate of each weight type's kernel (``thread_gbs``, capped by ``host_read_efficiency`` x
    ``memory.bandwidth_gbs``) plus ``cpu_node_us`` per graph node; and ``split_us`` per switch
    between devices. ``orch calibrate`` measures them; the profile says where each came from.
    """

    source: str = ""
    """Where these constants come from (``orch calibrate`` writes its date and engine build)."""
    gpu_read_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.75
    gpu_node_us: Annotated[float, Field(ge=0)] = 1.5
    split_us: Annotated[float, Field(ge=0)] = 10.0
    link_gbs: Annotated[float, Field(gt=0)] = 25.0
    """Host <-> GPU link (PCIe) for activations and, in prefill, host weights copied in."""
    host_read_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.8
    cpu_node_us: Annotated[float, Field(ge=0)] = 4.0
    cpu_clock_ghz: Annotated[float, Field(gt=0)] = 3.0
    thread_gbs: ThreadRates = Field(default_factory=dict)
    """Bytes of weights one decode thread streams per second, by engine and weight type."""
    default_thread_gbs: Annotated[float, Field(gt=0)] = 12.0
    """For weight types ``thread_gbs`` does not list."""
    thread_scale: Annotated[float, Field(gt=0)] = 1.0
    """Factor on every per-thread rate: this machine's cores against the one the rates were
    measured on (1 when ``orch calibrate`` ran on this machine)."""
    error_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.15
    """Half-width of the reported range: the largest held-out error seen in calibration."""

    @field_validator("thread_gbs")
    @classmethod
    def _types(cls, value: ThreadRates) -> ThreadRates:
        return _known_type_keys(value)


class Prefill(Strict):
    """Constants of the prefill-speed model: compute-bound, by ubatch."""

    source: str = ""
    gpu_tflops: Annotated[float, Field(ge=0)] = 0.0
    """Dense FP16 tensor throughput of one GPU (spec sheet; 0: unknown)."""
    gpu_flops_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.35
    thread_gflops: ThreadRates = Field(default_factory=dict)
    """Matrix FLOPs one prefill thread performs per second, by engine and weight type."""
    default_thread_gflops: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("thread_gflops")
    @classmethod
    def _types(cls, value: ThreadRates) -> ThreadRates:
        return _known_type_keys(value)


class HardwareProfile(Strict):
    """A machine: CPU, RAM, NUMA layout and GPUs."""

    description: str = ""
    cpu: Cpu
    memory: Memory
    numa: tuple[NumaNode, ...] = ()
    gpus: tuple[Gpu, ...] = ()
    budget: Budget = Budget()
    decode: Decode = Decode()
    prefill: Prefill = Prefill()

    @model_validator(mode="after")
    def _unique_indices(self) -> HardwareProfile:
        seen: set[int] = set()
        for gpu in self.gpus:
            if gpu.index in seen:
                raise ValueError(f"gpus: index {gpu.index} appears twice")
            seen.add(gpu.index)
        nodes = [n.node for n in self.numa]
        if len(nodes) != len(set(nodes)):
            raise ValueError("numa: a node id appears twice")
        return self

    def gpu(self, index: int) -> Gpu | None:
        """The GPU with this index, if the machine has it."""
        return next((g for g in self.gpus if g.index == index), None)


# ---------------------------------------------------------------- architecture facts


class Moe(Strict):
    """Mixture-of-experts layout."""

    n_expert: PosInt
    n_expert_used: PosInt
    n_ff_exp: PosInt
    n_ff_shexp: NonNegInt = 0
    layer_step: PosInt = 1
    """Every ``layer_step``-th layer is MoE (Llama 4 Maverick interleaves); the rest are dense."""


class LinearAttention(Strict):
    """Hybrid models (Qwen3-Next, Qwen3.5): Gated DeltaNet layers between full-attention ones."""

    full_attention_interval: PosInt
    n_key_heads: PosInt
    n_value_heads: PosInt
    key_head_dim: PosInt
    value_head_dim: PosInt
    conv_kernel: PosInt = 4


def arch_name_problem(name: str) -> str | None:
    """Why ``name`` is not a GGUF architecture name (it becomes TOML, keys and file names)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        return None
    return f"{name!r} is not an architecture name (lower-case letters, digits, _ . -)"


class Architecture(Strict):
    """Facts about a model that every quant and profile of it share."""

    description: str = ""
    gguf_arch: str
    hf_repo: str = ""
    params_b: Annotated[float, Field(gt=0)]
    active_params_b: Annotated[float, Field(gt=0)] | None = None
    n_layer: PosInt
    n_embd: PosInt
    n_head: PosInt
    n_head_kv: PosInt
    head_dim: PosInt
    n_ff: NonNegInt = 0
    vocab: PosInt
    ctx_train: PosInt
    tied_embeddings: bool = False
    sliding_window: NonNegInt = 0
    sliding_window_pattern: NonNegInt = 0
    """With a window: every ``pattern``-th layer is global, the rest are windowed."""
    moe: Moe | None = None
    linear_attention: LinearAttention | None = None
    extra_params_b: Annotated[float, Field(ge=0)] = 0.0
    """Parameters outside the text decoder (vision tower, MTP head) that vLLM still loads."""

    @field_validator("gguf_arch")
    @classmethod
    def _arch_name(cls, value: str) -> str:
        problem = arch_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _dense_needs_ff(self) -> Architecture:
        if self.moe is None and self.n_ff == 0:
            raise ValueError("n_ff: a dense model needs n_ff > 0")
        return self

    def has_kv(self, layer: int) -> bool:
        """Whether a layer keeps a KV cache (hybrid models: only full-attention layers do)."""
        if self.linear_attention is None:
            return True
        return (layer + 1) % self.linear_attention.full_attention_interval == 0

    def is_moe_layer(self, layer: int) -> bool:
        """Whether a layer's FFN is a mixture of experts."""
        return self.moe is not None and (layer + 1) % self.moe.layer_step == 0


# ---------------------------------------------------------------- model profile


HF_REPO = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
HF_REVISION = r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*"


class ModelFile(Strict):
    """The weights: a GGUF by path or in a Hugging Face cache, or (vLLM) a Hugging Face repo."""

    path: MaybeWord = ""
    hf_repo: str = ""
    """``ORG/NAME`` on the Hugging Face Hub, found offline in the host's cache."""
    hf_file: str = ""
    """The GGUF inside ``hf_repo`` (a split's first part); not for vLLM, which loads the repo."""
    revision: str = "main"
    """Branch, tag or commit hash of ``hf_repo``."""
    quant: str
    mount_root: str = ""
    """Podman, with ``path``: the host folder mounted at /models (default: the GGUF's folder).
    With ``hf_repo`` orch mounts the repo's cache folder, so the snapshot's links resolve."""
    mount_options: Annotated[str, Field(pattern=r"^[A-Za-z0-9=_-]+(,[A-Za-z0-9=_-]+)*$")] = "ro,Z"

    @field_validator("hf_repo")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        if value and (not re.fullmatch(HF_REPO, value) or ".." in value):
            raise ValueError(f"{value!r} is not a Hugging Face repo id like ORG/NAME")
        return value

    @field_validator("hf_file")
    @classmethod
    def _repo_file(cls, value: str) -> str:
        parts = value.split("/")
        if value and (value.startswith("/") or any(p in ("", ".", "..") for p in parts)):
            raise ValueError(f"{value!r} is not a file path inside the repo like DIR/NAME.gguf")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not re.fullmatch(HF_REVISION, value) or ".." in value or value.startswith("-"):
            raise ValueError(f"{value!r} is not a branch, tag or commit hash")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelFile:
        if self.path and self.hf_repo:
            raise ValueError("path: set path or hf_repo, not both")
        if self.hf_file and not self.hf_repo:
            raise ValueError("hf_file: needs hf_repo")
        if self.mount_root and self.hf_repo:
            raise ValueError("mount_root: orch mounts the hf_repo's cache folder itself")
        return self

    tensor_types: dict[str, str] = Field(default_factory=dict)
    """Override the quant recipe per tensor kind, e.g. ``{ffn_exps = "iq4_nl"}``."""

    @field_validator("tensor_types")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, type_name in value.items():
            if type_name.lower() not in GGML_TYPES:
                raise ValueError(f"{kind}: unknown ggml type {type_name!r}")
        return value


class OverrideTensor(Strict):
    """One ``-ot pattern=DEVICE`` rule. Rules apply in order; the first match wins."""

    pattern: str
    device: str

    @field_validator("pattern")
    @classmethod
    def _ecmascript(cls, value: str) -> str:
        if "," in value or "=" in value:
            raise ValueError(f"{value!r}: ',' and '=' separate -ot rules and cannot appear in one")
        if not value:
            raise ValueError("empty: it would match every tensor (write . if that is meant)")
        try:
            compile_pattern(value)  # the engines' std::regex grammar (ECMAScript)
        except PatternError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not re.fullmatch(r"CPU|CUDA\d+", value):
            raise ValueError(f"{value!r} is not a device (valid: CPU, CUDA0, CUDA1, ...)")
        return value


class Sampling(Strict):
    """Server-side sampling defaults."""

    temp: Annotated[float, Field(ge=0)] | None = None
    top_k: NonNegInt | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0)] | None = None
    seed: Annotated[int, Field(ge=-1, le=2**32 - 1)] | None = None
    """llama-server reads it as a uint32 (``std::stoul``); -1 is a random seed."""


AUTO_PLACED = ("gpu_layers", "cpu_moe", "n_cpu_moe", "override_tensors", "tensor_split")
"""The engine settings ``placement = "auto"`` decides."""


class LlamaEngine(Strict):
    """llama.cpp's or ik_llama.cpp's llama-server."""

    kind: Literal["llama.cpp", "ik_llama.cpp"]
    version: str = "latest"
    binary: Word = "llama-server"
    ctx: PosInt
    batch: PosInt = 2048
    ubatch: PosInt = 512
    threads: PosInt | None = None
    threads_batch: PosInt | None = None
    gpu_layers: NonNegInt | None = None
    split_mode: Literal["layer", "row", "none"] | None = None
    tensor_split: tuple[Annotated[float, Field(ge=0)], ...] = ()
    main_gpu: NonNegInt | None = None
    override_tensors: tuple[OverrideTensor, ...] = ()
    cpu_moe: bool = False
    n_cpu_moe: NonNegInt | None = None
    cache_type_k: CacheType = "f16"
    cache_type_v: CacheType = "f16"
    flash_attn: FlashAttn | None = None
    load_mode: LoadMode | None = None
    """Default: the engine's (mmap)."""
    parallel: PosInt | None = None
    """Default: the engine's (1 slot for the versions orch renders)."""
    kv_unified: bool = False
    jinja: bool = False
    grouped_expert_routing: bool = False
    """ik_llama.cpp's ``-ger``."""
    metrics: bool = True
    cache_ram_mib: Annotated[int, Field(ge=-1, le=INT32_MAX)] | None = None
    """llama-server's prompt cache in RAM (``--cache-ram``); -1 is unlimited, 0 off."""
    sampling: Sampling = Sampling()
    placement: Literal["manual", "auto"] = "manual"
    extra_args: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> LlamaEngine:
        if self.ubatch > self.batch:
            raise ValueError(f"ubatch: {self.ubatch} is larger than batch {self.batch}")
        if self.cpu_moe and self.n_cpu_moe is not None:
            raise ValueError("cpu_moe: set cpu_moe or n_cpu_moe, not both")
        if self.threads_batch is not None and self.threads is None:
            raise ValueError("threads_batch: set threads too")
        if self.tensor_split and not any(self.tensor_split):
            raise ValueError("tensor_split: every part is 0")
        if self.placement == "auto":
            chosen = [name for name in AUTO_PLACED if getattr(self, name) not in (None, False, ())]
            if chosen:
                raise ValueError(
                    f'placement: "auto" chooses {", ".join(AUTO_PLACED)}; remove '
                    f'{", ".join(chosen)} or set placement = "manual"'
                )
        return self


class VllmEngine(Strict):
    """vLLM's OpenAI-compatible server (``vllm serve``)."""

    kind: Literal["vllm"]
    version: str = "latest"
    binary: Word = "vllm"
    max_model_len: PosInt
    max_num_seqs: PosInt = 256
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    tensor_parallel_size: PosInt = 1
    dtype: Literal["auto", "bfloat16", "float16", "half", "float32"] = "auto"
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    enable_prefix_caching: bool | None = None
    """Default: vLLM's (on for generative models); false renders --no-enable-prefix-caching."""
    trust_remote_code: bool = False
    enable_auto_tool_choice: bool = False
    tool_call_parser: Word | None = None
    served_model_name: Word | None = None
    extra_args: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _tool_choice_needs_parser(self) -> VllmEngine:
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError("enable_auto_tool_choice: needs tool_call_parser")
        return self


Engine = Annotated[LlamaEngine | VllmEngine, Field(discriminator="kind")]


class Publish(Strict):
    """Where the server is reached from the host."""

    host: str | None = None
    """The address it listens on (an IP address, or localhost). Default: orch's
    ``default_bind_host`` (127.0.0.1). Anything but a loopback address is reachable from
    other machines; ``orch plan`` says so."""
    port: Annotated[int, Field(ge=1, le=65535)]

    @field_validator("host")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None or value == "localhost":
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0 for every "
                "interface, ::1) or localhost"
            ) from None
        return value


class PodmanRuntime(Strict):
    """Run the engine in a podman container."""

    kind: Literal["podman"]
    image: Word
    container_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    shm_size: str | None = None
    cap_add: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_]+$")], ...] = ()
    devices: tuple[Word, ...] = ()
    volumes: tuple[str, ...] = ()
    env: dict[EnvName, str] = Field(default_factory=dict)
    init: bool = True
    network: str | None = None
    """Default: podman's. ``host`` shares the host's network: the engine then listens on
    ``publish.host`` itself. Namespaces of other containers are refused."""
    hf_home: str = "/root/.cache/huggingface"
    """vLLM: the container's HF_HOME; the host's Hugging Face hub cache is mounted at its
    ``hub`` folder (vllm/vllm-openai reads ``/root/.cache/huggingface``)."""
    extra_args: tuple[str, ...] = ()

    @field_validator("hf_home")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not re.fullmatch(r"/[^:,\s]*", value):
            raise ValueError(f"{value!r} is not an absolute container path")
        return value.rstrip("/") or "/"

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*", value):
            raise ValueError(f"{value!r} is not an image reference (like localhost/name:tag)")
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value == "none":
            raise ValueError("'none': nothing could reach the server (health checks included)")
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(
                f"{value!r} is not a network name (e.g. host, bridge, pasta, slirp4netns or a "
                "podman network); joining another namespace (container:, ns:) is refused"
            )
        return value

    @field_validator("shm_size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+[bkmg]?", value):
            raise ValueError(f"{value!r} is not a size like 16g")
        return value

    @field_validator("volumes")
    @classmethod
    def _volume(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for vol in value:
            if not re.fullmatch(r"/[^:]*:/[^:]*(:[a-zA-Z,]+)?", vol):
                raise ValueError(f"{vol!r} is not HOST:CONTAINER[:OPTIONS] with absolute paths")
        return value


class ProcessRuntime(Strict):
    """Run the engine as a plain child process."""

    kind: Literal["process"]
    env: dict[EnvName, str] = Field(default_factory=dict)


Runtime = Annotated[PodmanRuntime | ProcessRuntime, Field(discriminator="kind")]


class Numactl(Strict):
    """Prefix the command with numactl."""

    cpunodebind: tuple[NonNegInt, ...] = ()
    membind: tuple[NonNegInt, ...] = ()
    physcpubind: Annotated[str, Field(pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")] | None = None
    interleave: tuple[NonNegInt, ...] = ()


class Health(Strict):
    """Readiness polling."""

    path: Annotated[str, Field(pattern=r"^/[!-~]*$")] = "/health"
    timeout_s: Annotated[float, Field(gt=0, le=7 * 86400)] | None = None
    """Default: derived from the model size."""


class Warmup(Strict):
    """Requests sent after ready, so the caches are warm before `orch up` returns."""

    requests: Annotated[int, Field(ge=0, le=1000)] = 3
    system_prompt: str = (
        "You are a concise assistant. Answer in one short paragraph unless asked otherwise."
    )
    prompt: str = "Say hello and name three prime numbers."
    max_tokens: PosInt = 32


class Secrets(Strict):
    """Where the API key comes from: an environment variable or a file, never the profile."""

    api_key_env: EnvName | None = None
    api_key_file: Word | None = None
    pass_env: tuple[EnvName, ...] = ()
    """Other secret variables (``HF_TOKEN``...) the engine gets from orch's environment, by
    name: ``podman run -e NAME``; a process inherits them. Their values are never written."""

    @field_validator("api_key_env", "api_key_file", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "":
            raise ValueError(
                "empty, which is not 'no authentication': name the key's source, or remove "
                "the key to run without authentication"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> Secrets:
        if self.api_key_env and self.api_key_file:
            raise ValueError("api_key_env: set api_key_env or api_key_file, not both")
        return self


class ModelProfile(Strict):
    """One launchable configuration: ``profiles/models/NAME.toml``."""

    description: str = ""
    architecture: str
    hardware: str
    model: ModelFile
    engine: Engine
    runtime: Runtime
    publish: Publish
    numactl: Numactl | None = None
    needs_whole_gpu: bool = False
    gpus: tuple[NonNegInt, ...] | Literal["any"] | None = None
    """GPU indices this profile may use (default: all the hardware has); ``[]``: none.
    ``"any"``: one GPU, whichever has room when it starts (``orch up``: the first whose budget
    fits)."""
    health: Health = Health()
    warmup: Warmup = Warmup()
    secrets: Secrets = Secrets()

    @field_validator("gpus")
    @classmethod
    def _distinct(
        cls, value: tuple[int, ...] | Literal["any"] | None
    ) -> tuple[int, ...] | Literal["any"] | None:
        indices = value if isinstance(value, tuple) else ()
        for index in set(indices):
            if indices.count(index) > 1:
                raise ValueError(f"GPU {index} is listed twice")
        return value

    @model_validator(mode="after")
    def _model_source(self) -> ModelProfile:
        model = self.model
        if isinstance(self.engine, VllmEngine):
            if not model.hf_repo and not model.path:
                raise ValueError("model: vllm needs model.hf_repo or model.path")
            if model.hf_file:
                raise ValueError("model.hf_file: vllm loads the whole hf_repo; remove hf_file")
        elif model.hf_repo:
            if not model.hf_file:
                raise ValueError("model.hf_file: llama.cpp engines need the GGUF in hf_repo")
            if not model.hf_file.endswith(".gguf"):
                raise ValueError(f"model.hf_file: {model.hf_file!r} is not a .gguf file")
        elif not model.path:
            raise ValueError("model.path: llama.cpp engines need a GGUF path or model.hf_repo")
        elif not model.path.endswith(".gguf"):
            raise ValueError(f"model.path: {model.path!r} is not a .gguf file")
        return self
