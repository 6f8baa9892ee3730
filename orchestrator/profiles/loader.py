"""Parse profiles from text, resolve references, and flatten errors into ``file: key: msg``."""

from __future__ import annotations

import contextlib
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.errors import ProfileError
from orchestrator.profiles.schema import (
    PROFILE_NAME,
    Architecture,
    HardwareProfile,
    LlamaEngine,
    ModelProfile,
    PodmanRuntime,
    ProcessRuntime,
    VllmEngine,
)

M = TypeVar("M", bound=BaseModel)

_UNION_TAGS = {"llama.cpp", "ik_llama.cpp", "vllm", "podman", "process"}
_TAGGED_UNIONS: dict[str, tuple[type[BaseModel], ...]] = {
    "engine": (LlamaEngine, VllmEngine),
    "runtime": (PodmanRuntime, ProcessRuntime),
}


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _strip_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    kept: list[int | str] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] in _TAGGED_UNIONS and part in _UNION_TAGS:
            continue
        kept.append(part)
    return tuple(kept)


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...], tag: str | None) -> Any:
    """The model class that owns the last element of ``loc``, following fields."""
    current: Any = root
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None
            if part in _TAGGED_UNIONS:
                options = _TAGGED_UNIONS[part]
                chosen = next((o for o in options if tag in _literal_values(o)), options[0])
                current = chosen
                continue
            current = _unwrap(field.annotation)
    return current


def _literal_values(model: type[BaseModel]) -> tuple[str, ...]:
    return typing.get_args(model.model_fields["kind"].annotation)


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    if origin is tuple:
        args = typing.get_args(annotation)
        return _unwrap(args[0]) if args else None
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def _quoted_choices(expected: str) -> str:
    return ", ".join(re.findall(r"'([^']*)'", expected))


def format_validation_error(
    exc: ValidationError, root: type[BaseModel], data: dict[str, Any]
) -> list[str]:
    """Turn pydantic's errors into ``dotted.key: message`` lines, one per problem."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        raw_loc = tuple(err["loc"])
        tag = None
        if len(raw_loc) > 1 and raw_loc[0] in _TAGGED_UNIONS and raw_loc[1] in _UNION_TAGS:
            tag = str(raw_loc[1])
        loc = _strip_tags(raw_loc)
        key = _dotted(loc)
        kind = err["type"]
        given = err.get("input")
        ctx = err.get("ctx", {})
        if kind == "extra_forbidden":
            owner = _model_at(root, loc[:-1], tag)
            valid = ""
            if isinstance(owner, type) and issubclass(owner, BaseModel):
                valid = f" (valid: {', '.join(owner.model_fields)})"
            msg = f"unknown key{valid}"
        elif kind == "literal_error":
            msg = f"{given!r} is not one of {_quoted_choices(str(ctx.get('expected', '')))}"
        elif kind == "union_tag_invalid":
            tag_given = ctx.get("tag", given)
            msg = (
                f"{tag_given!r} is not one of {_quoted_choices(str(ctx.get('expected_tags', '')))}"
            )
            key = _dotted(loc + ("kind",))
        elif kind == "union_tag_not_found":
            field = str(loc[-1]) if loc else ""
            options = _TAGGED_UNIONS.get(field, ())
            kinds = ", ".join(v for o in options for v in _literal_values(o))
            key = _dotted(loc + ("kind",))
            msg = f"missing (valid: {kinds})"
        elif kind == "missing":
            msg = "missing"
        elif kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
            bound = next(iter(ctx.values()), "")
            if isinstance(bound, float) and bound.is_integer():
                bound = int(bound)
            op = {
                "greater_than": ">",
                "greater_than_equal": ">=",
                "less_than": "<",
                "less_than_equal": "<=",
            }[kind]
            msg = f"must be {op} {bound}, got {given!r}"
        elif kind in {"int_type", "int_parsing", "int_from_float"}:
            msg = f"expected an integer, got {given!r}"
        elif kind in {"float_type", "float_parsing"}:
            msg = f"expected a number, got {given!r}"
        elif kind in {"string_type"}:
            msg = f"expected a string, got {given!r}"
        elif kind in {"bool_type", "bool_parsing"}:
            msg = f"expected true or false, got {given!r}"
        elif kind in {"model_type", "model_attributes_type", "dict_type"}:
            msg = f"expected a table, got {given!r}"
        elif kind in {"tuple_type", "list_type"}:
            msg = f"expected a list, got {given!r}"
        elif kind == "string_pattern_mismatch":
            msg = f"{given!r} does not match {ctx.get('pattern')}"
        elif kind == "value_error":
            text = str(ctx.get("error", err["msg"]))
            inner_key, sep, rest = text.partition(": ")
            if sep and re.fullmatch(r"[a-z_.\[\]0-9]+", inner_key) and not isinstance(given, str):
                key = _dotted(loc + tuple(inner_key.split("."))) if key else inner_key
                text = rest
            msg = text
        else:
            msg = err["msg"]
        lines.append(f"{key}: {msg}" if key else msg)
    return lines


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text, reporting syntax errors against ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, [f"TOML syntax error: {exc}"]) from None


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate parsed data into ``model`` or raise a ProfileError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(source, format_validation_error(exc, model, data)) from None


def parse_hardware(text: str, source: str) -> HardwareProfile:
    """Parse a hardware profile from TOML text."""
    return validate(HardwareProfile, parse_toml(text, source), source)


def parse_architecture(text: str, source: str) -> Architecture:
    """Parse an architecture-facts file from TOML text."""
    return validate(Architecture, parse_toml(text, source), source)


def parse_model_profile(text: str, source: str) -> ModelProfile:
    """Parse a standalone model profile (no ``extends``) from TOML text."""
    data = parse_toml(text, source)
    if "extends" in data:
        raise ProfileError(source, ["extends: only profiles loaded from a catalog can extend"])
    return validate(ModelProfile, data, source)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class ResolvedProfile:
    """A model profile with its references loaded."""

    name: str
    source: str
    profile: ModelProfile
    architecture: Architecture
    hardware: HardwareProfile
    hardware_name: str


class Catalog:
    """The profiles tree: ``models/``, ``architectures/`` and ``hardware/`` below one folder.

    Given several folders (layers), each kind and name is looked up in them in order and the
    first file found wins whole; ``names`` lists the union.
    """

    def __init__(self, root: Path | Sequence[Path]) -> None:
        self.roots = (root,) if isinstance(root, Path) else tuple(root)
        self.root = self.roots[0]

    def _dir(self, kind: str) -> Path:
        return self.root / kind

    def names(self, kind: str) -> list[str]:
        """Profile names of one kind, sorted; files starting with ``_`` are bases only."""
        found: set[str] = set()
        for root in self.roots:
            folder = root / kind
            with contextlib.suppress(OSError):
                if folder.is_dir():
                    found.update(p.stem for p in folder.glob("*.toml"))
        return sorted(n for n in found if not n.startswith("_"))

    def model_names(self) -> list[str]:
        """Launchable profile names."""
        return self.names("models")

    def _path(self, kind: str, name: str) -> Path:
        for root in self.roots:
            path = root / kind / f"{name}.toml"
            if path.is_file():
                return path
        return self._dir(kind) / f"{name}.toml"

    def source(self, kind: str, name: str) -> str:
        """The path a profile is reported under."""
        return str(self._path(kind, name))

    def _read(self, kind: str, name: str, referrer: str, key: str) -> tuple[str, str]:
        label = {"models": "model", "hardware": "hardware", "architectures": "architecture"}[kind]
        if not re.fullmatch(PROFILE_NAME, name):
            raise ProfileError(referrer, [f"{key}: {name!r} is not a valid profile name"])
        path = self._path(kind, name)
        if not path.is_file():
            available = ", ".join(self.names(kind)) or "none"
            raise ProfileError(
                referrer, [f"{key}: no {label} profile {name!r} (available: {available})"]
            )
        return path.read_text(encoding="utf-8"), str(path)

    def hardware(self, name: str, referrer: str = "orch", key: str = "hardware") -> HardwareProfile:
        """Load ``hardware/NAME.toml``."""
        text, source = self._read("hardware", name, referrer, key)
        return parse_hardware(text, source)

    def architecture(self, name: str, referrer: str, key: str = "architecture") -> Architecture:
        """Load ``architectures/NAME.toml``."""
        text, source = self._read("architectures", name, referrer, key)
        return parse_architecture(text, source)

    def _model_data(
        self, name: str, referrer: str, key: str, chain: tuple[str, ...]
    ) -> dict[str, Any]:
        text, source = self._read("models", name, referrer, key)
        data = parse_toml(text, source)
        parent = data.pop("extends", None)
        if parent is None:
            return data
        if not isinstance(parent, str):
            raise ProfileError(source, [f"extends: expected a profile name, got {parent!r}"])
        if parent in chain or parent == name:
            cycle = " -> ".join((*chain, name, parent))
            raise ProfileError(source, [f"extends: cycle {cycle}"])
        base = self._model_data(parent, source, "extends", (*chain, name))
        return deep_merge(base, data)

    def load(self, name: str, hardware_override: str | None = None) -> ResolvedProfile:
        """Load a model profile, its ``extends`` chain, its architecture and hardware."""
        source = self.source("models", name)
        data = self._model_data(name, "orch", "profile", ())
        if hardware_override:
            data["hardware"] = hardware_override
        profile = validate(ModelProfile, data, source)
        if profile.model.path.startswith("~"):
            expanded = str(Path(profile.model.path).expanduser())
            profile = profile.model_copy(
                update={"model": profile.model.model_copy(update={"path": expanded})}
            )
        key_file = profile.secrets.api_key_file
        if key_file and key_file.startswith("~"):
            secrets = profile.secrets.model_copy(
                update={"api_key_file": str(Path(key_file).expanduser())}
            )
            profile = profile.model_copy(update={"secrets": secrets})
        architecture = self.architecture(profile.architecture, source)
        hardware = self.hardware(profile.hardware, source)
        resolved = ResolvedProfile(name, source, profile, architecture, hardware, profile.hardware)
        check_references(resolved)
        return resolved


def check_references(resolved: ResolvedProfile) -> None:
    """Cross-file checks: GPU indices, NUMA nodes and devices must exist on the hardware."""
    problems: list[str] = []
    profile, hardware = resolved.profile, resolved.hardware
    gpu_names = [f"CUDA{g.index}" for g in hardware.gpus]
    has = ", ".join(gpu_names) if gpu_names else "no GPUs"
    hw = f"hardware {resolved.hardware_name!r}"
    engine = profile.engine
    if isinstance(engine, LlamaEngine):
        for i, rule in enumerate(engine.override_tensors):
            if rule.device != "CPU" and rule.device not in gpu_names:
                problems.append(
                    f"engine.override_tensors[{i}].device: {rule.device} is not a GPU of {hw} "
                    f"(it has {has})"
                )
        if engine.tensor_split and len(engine.tensor_split) > len(hardware.gpus):
            problems.append(
                f"engine.tensor_split: {len(engine.tensor_split)} parts but {hw} has "
                f"{len(hardware.gpus)} GPU(s)"
            )
        if engine.main_gpu is not None and hardware.gpu(engine.main_gpu) is None:
            problems.append(f"engine.main_gpu: GPU {engine.main_gpu} is not in {hw} ({has})")
        if engine.n_cpu_moe is not None and resolved.architecture.moe is None:
            problems.append("engine.n_cpu_moe: the architecture has no experts")
        if engine.cpu_moe and resolved.architecture.moe is None:
            problems.append("engine.cpu_moe: the architecture has no experts")
    elif engine.tensor_parallel_size > max(len(hardware.gpus), 1):
        problems.append(
            f"engine.tensor_parallel_size: {engine.tensor_parallel_size} but {hw} has "
            f"{len(hardware.gpus)} GPU(s)"
        )
    for index in profile.gpus if isinstance(profile.gpus, tuple) else ():
        if hardware.gpu(index) is None:
            problems.append(f"gpus: GPU {index} is not in {hw} ({has})")
    if profile.numactl is not None:
        nodes = {n.node for n in hardware.numa} or {0}
        for key in ("cpunodebind", "membind", "interleave"):
            for node in getattr(profile.numactl, key):
                if node not in nodes:
                    valid = ", ".join(str(n) for n in sorted(nodes))
                    problems.append(
                        f"numactl.{key}: NUMA node {node} is not in {hw} (nodes: {valid})"
                    )
    if problems:
        raise ProfileError(resolved.source, problems)
