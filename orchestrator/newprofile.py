"""``orch new NAME --from-gguf FILE``: an architecture and a model profile that fit the hardware.

:func:`propose` is pure (a GGUF header and hardware in, TOML text out): it derives the
architecture facts, picks the fastest placement that still leaves a useful context, then the
largest context (≤ the trained one) that the memory model says fits. :func:`write_files` is
the only effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import tomli_w

from orchestrator.errors import BudgetError, OrchError, ProfileError
from orchestrator.ggml_types import GGML_TYPES, ggml_type
from orchestrator.memory.breakdown import GIB, MIB
from orchestrator.memory.gguf_arch import architecture_from_gguf
from orchestrator.memory.tensors import RECIPES, GgufHeader
from orchestrator.names import name_problem
from orchestrator.plan import Plan, budgets, build_plan, estimate
from orchestrator.profiles.loader import ResolvedProfile, check_references, validate
from orchestrator.profiles.schema import (
    Architecture,
    HardwareProfile,
    ModelProfile,
)
from orchestrator.sizing import largest
from orchestrator.textsafe import escape_controls

FIRST_PORT = 8080
CTX_STEP = 256
USEFUL_CTX = 8192
"""A placement is preferred only if it leaves at least this much context (or the trained one)."""
ALL_LAYERS = 999

# llama.cpp's LLAMA_FTYPE_* (general.file_type) → the quant's usual name.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip
_TYPE_RECIPE = {"q4_k": "Q4_K_M", "q5_k": "Q5_K_M", "q6_k": "Q6_K"}


class NewProfileError(OrchError):
    """``orch new`` cannot write the profiles (bad name, files exist, nothing fits)."""

    exit_code = 2


@dataclass(frozen=True)
class Quant:
    """The quant label the file claims, the dominant tensor type, and the recipe written."""

    label: str
    dominant: str
    recipe: str


@dataclass(frozen=True)
class Placement:
    """Where the layers go: engine settings and a phrase for the header comment."""

    what: str
    engine: Mapping[str, Any]


@dataclass(frozen=True)
class Proposal:
    """Everything ``orch new`` writes, and the plan that justified it."""

    name: str
    architecture: Architecture
    architecture_toml: str
    profile_toml: str
    plan: Plan
    placement: Placement
    quant: Quant


def check_name(name: str) -> None:
    """Raise unless ``name`` is a valid profile name."""
    problem = name_problem(name)
    if problem is not None:
        raise NewProfileError(problem)


def detect_quant(header: GgufHeader) -> Quant:
    """The file's quant from ``general.file_type`` or the dominant tensor type, and a recipe.

    ``model.quant`` must name a recipe so the profile also plans without the file (``orch
    validate``); with the file present the plan reads real sizes from the header instead.
    """
    by_type: Counter[str] = Counter()
    for tensor in header.tensors:
        if len(tensor.shape) >= 2:
            by_type[tensor.type_name.lower()] += tensor.nbytes
    dominant = by_type.most_common(1)[0][0] if by_type else "f16"
    raw = header.metadata.get("general.file_type")
    label = FILE_TYPES.get(int(raw), "") if isinstance(raw, int) else ""
    label = label or dominant.upper()
    if label in RECIPES:
        recipe = label
    elif dominant.upper() in RECIPES:
        recipe = dominant.upper()
    elif dominant in _TYPE_RECIPE:
        recipe = _TYPE_RECIPE[dominant]
    else:
        bits = GGML_TYPES[dominant].bits_per_weight if dominant in GGML_TYPES else 16.0
        recipe = min(RECIPES, key=lambda r: abs(ggml_type(RECIPES[r]["*"]).bits_per_weight - bits))
    return Quant(label, dominant, recipe)


def pick_port(taken: set[int], in_use: Callable[[int], bool], first: int = FIRST_PORT) -> int:
    """The lowest port from ``first`` that no profile claims and nothing listens on."""
    for port in range(first, 65536):
        if port not in taken and not in_use(port):
            return port
    raise NewProfileError(f"no free port from {first} up")


def placements(arch: Architecture, hardware: HardwareProfile) -> list[Placement]:
    """Placements from fastest to slowest (partial offload is searched separately)."""
    if not hardware.gpus:
        return [Placement("CPU only (the hardware has no GPU)", {"gpu_layers": 0})]
    out = [Placement("every layer on the GPU(s)", {"gpu_layers": ALL_LAYERS})]
    if arch.moe is not None:
        out.append(
            Placement(
                "attention on the GPU(s), experts in host RAM (--cpu-moe)",
                {"gpu_layers": ALL_LAYERS, "cpu_moe": True},
            )
        )
    return out


def _profile_data(
    *,
    name: str,
    description: str,
    hardware_name: str,
    model_path: str,
    quant: str,
    port: int,
    ctx: int,
    jinja: bool,
    engine: Mapping[str, Any],
) -> dict[str, Any]:
    engine_data: dict[str, Any] = {"kind": "llama.cpp", "ctx": ctx, "parallel": 1}
    if jinja:
        engine_data["jinja"] = True
    engine_data.update(engine)
    return {
        "description": description,
        "architecture": name,
        "hardware": hardware_name,
        "model": {"path": model_path, "quant": quant},
        "engine": engine_data,
        "runtime": {"kind": "process"},
        "publish": {"port": port},
    }


class _Search:
    """Fit checks for one model on one hardware profile, varying ctx and placement."""

    def __init__(
        self,
        name: str,
        source: str,
        base: dict[str, Any],
        arch: Architecture,
        hardware: HardwareProfile,
        hardware_name: str,
        header: GgufHeader,
    ) -> None:
        self.name, self.source, self.base = name, source, base
        self.arch, self.hardware, self.hardware_name = arch, hardware, hardware_name
        self.header = header

    def resolved(self, ctx: int, engine: Mapping[str, Any]) -> ResolvedProfile:
        data = dict(self.base)
        data["engine"] = {**self.base["engine"], "ctx": ctx, **engine}
        profile = validate(ModelProfile, data, self.source)
        resolved = ResolvedProfile(
            self.name, self.source, profile, self.arch, self.hardware, self.hardware_name
        )
        check_references(resolved)
        return resolved

    def fits(self, ctx: int, engine: Mapping[str, Any]) -> bool:
        memory, _, _ = estimate(self.resolved(ctx, engine), self.header)
        return all(b.fits for b in budgets(memory, self.hardware))

    def largest_ctx(self, engine: Mapping[str, Any], limit: int) -> int:
        """The largest fitting ctx ≤ ``limit`` (``limit`` or a multiple of 256); 0 if none."""
        if self.fits(limit, engine):
            return limit
        steps = largest(1, (limit - 1) // CTX_STEP, lambda n: self.fits(n * CTX_STEP, engine))
        return (steps or 0) * CTX_STEP

    def most_layers(self, ctx: int) -> int:
        """The most layers (0..n_layer) on the GPUs that fit with ``ctx``."""
        return largest(1, self.arch.n_layer, lambda n: self.fits(ctx, {"gpu_layers": n})) or 0


def choose(search: _Search, ctx_train: int) -> tuple[Placement, int]:
    """The fastest placement that keeps a useful context, and its largest fitting ctx."""
    useful = min(ctx_train, USEFUL_CTX)
    options = placements(search.arch, search.hardware)
    fallback: tuple[Placement, int] | None = None
    for option in options:
        ctx = search.largest_ctx(option.engine, ctx_train)
        if ctx >= useful:
            return option, ctx
        if ctx and (fallback is None or ctx > fallback[1]):
            fallback = (option, ctx)
    if search.hardware.gpus:
        layers = search.most_layers(useful)
        partial = Placement(
            f"{layers} of {search.arch.n_layer} layers on the GPU(s), the rest on the CPU",
            {"gpu_layers": layers},
        )
        ctx = search.largest_ctx(partial.engine, ctx_train)
        if ctx >= useful or (ctx and (fallback is None or ctx > fallback[1])):
            return partial, ctx
    if fallback is not None:
        return fallback
    raise BudgetError(
        f"{search.name}: the weights do not fit {search.hardware_name} with any placement, "
        "even at the smallest context; pick a smaller quant or other hardware"
    )


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def propose(
    name: str,
    header: GgufHeader,
    model_path: Path,
    *,
    hardware: HardwareProfile,
    hardware_name: str,
    templates: jinja2.Environment,
    port: int,
    source: str = "",
) -> Proposal:
    """Architecture and model profile text for ``model_path`` on ``hardware``.

    Raises:
        NewProfileError: the name is invalid or the header lacks architecture facts.
        BudgetError: nothing fits the hardware.
    """
    check_name(name)
    try:
        arch = architecture_from_gguf(header)
    except (TypeError, ValueError, KeyError) as exc:  # GgufError is a ValueError
        raise NewProfileError(f"{model_path}: cannot derive architecture facts: {exc}") from None
    quant = detect_quant(header)
    # a GGUF's name is anyone's text: one line, no control characters, in the profile
    model_name = escape_controls(str(header.metadata.get("general.name", "")), keep="")
    model_name = model_name or escape_controls(model_path.stem, keep="")
    source = source or f"profiles/models/{name}.toml"
    jinja = "tokenizer.chat_template" in header.metadata
    base = _profile_data(
        name=name,
        description="",
        hardware_name=hardware_name,
        model_path=str(model_path),
        quant=quant.recipe,
        port=port,
        ctx=min(arch.ctx_train, USEFUL_CTX),
        jinja=jinja,
        engine={},
    )
    search = _Search(name, source, base, arch, hardware, hardware_name, header)
    placement, ctx = choose(search, arch.ctx_train)
    description = (
        f"{model_name} {quant.label} on {hardware_name}: {placement.what}, {ctx} ctx "
        "(written by orch new)"
    )
    data = _profile_data(
        name=name,
        description=description,
        hardware_name=hardware_name,
        model_path=str(model_path),
        quant=quant.recipe,
        port=port,
        ctx=ctx,
        jinja=jinja,
        engine=placement.engine,
    )
    resolved = ResolvedProfile(
        name, source, validate(ModelProfile, data, source), arch, hardware, hardware_name
    )
    plan = build_plan(resolved, templates, header=header)
    if not plan.fits:  # the search and the plan use the same model; this is a bug guard
        raise BudgetError(f"{name}: the chosen settings do not fit ({plan.suggestions})")

    memory = ", ".join(f"{b.device} {_gib(b.need)} of {_gib(b.capacity)}" for b in plan.budget)
    quant_note = f"model.quant: the file is {quant.label} (mostly {quant.dominant}); " + (
        f"recipe {quant.recipe} is the nearest orch knows, used only when the file is absent"
        if quant.recipe != quant.label
        else "sizes come from the GGUF header whenever the file is present"
    )
    profile_header = [
        f"# Written by `orch new {name} --from-gguf {model_path.name}` from the GGUF header.",
        f"# engine.ctx: {ctx} is the largest context that fits"
        f" (trained: {arch.ctx_train}, step {CTX_STEP}).",
        f"# placement: {placement.what}; the fastest option leaving"
        f" {min(arch.ctx_train, USEFUL_CTX)}+ ctx.",
        f"# memory at this ctx: {memory}.",
        f"# {quant_note}.",
        f"# publish.port: {port} is the first port from {FIRST_PORT} no profile claims"
        " and nothing listened on.",
        "# engine.parallel = 1: one slot, so the whole context serves one client.",
    ]
    arch_header = [
        f"# Written by `orch new {name} --from-gguf {model_path.name}`: facts from the GGUF"
        " header (general.architecture = "
        f"{arch.gguf_arch}).",
    ]
    # comments hold the file's name: escaped so that no newline in it can start a TOML line
    profile_header = [escape_controls(line, keep="") for line in profile_header]
    arch_header = [escape_controls(line, keep="") for line in arch_header]
    arch_data = arch.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    arch_data = {"description": arch.description, **arch_data} if arch.description else arch_data
    return Proposal(
        name=name,
        architecture=arch,
        architecture_toml="\n".join(arch_header) + "\n\n" + tomli_w.dumps(arch_data),
        profile_toml="\n".join(profile_header) + "\n\n" + tomli_w.dumps(data),
        plan=plan,
        placement=placement,
        quant=quant,
    )


def taken_ports(models_dir: Path) -> set[int]:
    """Ports the profiles under ``models_dir`` publish (unreadable files are skipped)."""
    import tomllib

    ports: set[int] = set()
    if not models_dir.is_dir():
        return ports
    for path in models_dir.glob("*.toml"):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable, not UTF-8, not TOML: skipped
            continue
        port = data.get("publish", {}).get("port") if isinstance(data, dict) else None
        if isinstance(port, int):
            ports.add(port)
    return ports


def write_files(files: Mapping[Path, str], *, force: bool) -> list[Path]:
    """Write every file, or none if any exists and ``force`` is off."""
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise ProfileError(
            "orch new",
            [f"{p} already exists (use --force to overwrite)" for p in existing],
        )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
