"""Fuzz: thousands of mutated profiles and argument lists, and never a traceback.

Profiles are the shipped ones with values replaced, keys added or removed, tables nested, and
some files mangled at the byte level; argument lists mix llama-server flags with hostile
values. Each goes through the real CLI in-process (``validate``, ``plan --dry-run``,
``estimate``): the exit code must be 0, 2, 3 or 4, with no exception and no traceback.
Hypothesis runs derandomized, so CI sees the same cases every run; ``max_examples`` bounds the
work: 1000 profiles and 1000 argument lists.
"""

from __future__ import annotations

import math
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PROFILES
from tests.hostile import Cli

EXIT_CODES = {0, 2, 3, 4}
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

ODD_STRINGS = [
    "",
    "-x",
    "--privileged",
    "--api-key",
    "0.0.0.0",
    "::",
    "host",
    "none",
    "container:x",
    "CUDA0",
    "CUDA9",
    "CPU",
    "exps",
    "(?i)exps",
    "(?P<n>x)",
    "(.*.*.*.*.*)*Q",
    "x[",
    "exps\\Z",
    "a{2,1}",
    "blk\\.(0|1)\\.ffn",
    "exps=CUDA0",
    "\x1b[2J",
    "\x1b]0;t\x07",
    "a\nb",
    "a\r",
    "\u202e",
    "\x00",
    "é",
    "/models/x.gguf",
    "x.gguf",
    "q8_0",
    "auto",
    "HF_TOKEN",
    "hf_PLANTED",
    "a" * 300,
    "inf",
    "1e9",
]
ODD_NUMBERS = [0, 1, -1, -5, 2**31 - 1, 2**31, 2**32, 2**63, 2**64, 10**30]
ODD_FLOATS = [0.0, -0.0, 0.5, -1.5, 1e308, math.inf, -math.inf, math.nan, 1e-320]

scalars = st.one_of(
    st.booleans(),
    st.sampled_from(ODD_NUMBERS),
    st.integers(-(2**40), 2**40),
    st.sampled_from(ODD_FLOATS),
    st.floats(),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=12),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "kind", "x", "ctx", "pattern"]), inner, max_size=2),
    ),
    max_leaves=6,
)


def alike(value: Any) -> st.SearchStrategy[Any]:
    """Hostile values of the same type as ``value``, so that more plans get past the schema."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.sampled_from(ODD_NUMBERS) | st.integers(-3, 2**33)
    if isinstance(value, float):
        return st.sampled_from(ODD_FLOATS) | st.floats(0, 2)
    if isinstance(value, str):
        return st.sampled_from(ODD_STRINGS) | st.just(value + "x") | st.just("-" + value)
    if isinstance(value, list):
        return st.lists(st.one_of(*(alike(v) for v in value[:2])) if value else scalars, max_size=4)
    return values


def _load_shipped() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((PROFILES / "models").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        if "extends" in data:
            data["extends"] = "_" + data["extends"]  # bases live as _NAME: not validated alone
        out[path.stem] = data
    return out


SHIPPED = _load_shipped()


def _paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in data.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


def _table(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        data = data[key]
    return data


@st.composite
def profiles(draw: st.DrawFn) -> bytes:
    """A shipped profile with one to three mutations, as TOML bytes (sometimes mangled)."""
    name = draw(st.sampled_from(sorted(SHIPPED)))
    data = tomllib.loads(tomli_w.dumps(SHIPPED[name]))  # a deep copy
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        paths = _paths(data)
        op = draw(st.sampled_from(["set", "set", "set", "add", "delete", "nest"]))
        if op == "add" or not paths:
            tables = [()] + [p for p in paths if isinstance(_table(data, p), dict)]
            where = draw(st.sampled_from(tables))
            key = draw(st.sampled_from(["thread", "ctx_size", "colour", "env", "extends", "x"]))
            _table(data, where)[key] = draw(values)
            continue
        path = draw(st.sampled_from(paths))
        parent, key = _table(data, path[:-1]), path[-1]
        if op == "delete":
            del parent[key]
        elif op == "nest":
            parent[key] = {"deeper": {"still": parent[key]}}
        else:
            parent[key] = draw(alike(parent[key]) | values)
    try:
        text = tomli_w.dumps(data).encode()
    except (TypeError, ValueError):  # a value TOML cannot hold: use a plain one
        text = tomli_w.dumps(SHIPPED[name]).encode()
    mangle = draw(st.sampled_from(["none"] * 12 + ["cut", "byte", "deep"]))
    if mangle == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif mangle == "byte":
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from([b"\xff", b"\x00", b"[", b"\n[x]\n", b'"']))
            + text[at:]
        )
    elif mangle == "deep":
        text = b"deep = " + b"[" * 3000 + b"]" * 3000 + b"\n" + text
    return text


@pytest.fixture(scope="module")
def fuzz_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    root = tmp_path_factory.mktemp("fuzz")
    cli = Cli(root)
    for kind in ("architectures", "hardware"):
        shutil.copytree(PROFILES / kind, cli.profiles / kind)
    (cli.profiles / "models").mkdir()
    for name, data in SHIPPED.items():
        if any(d.get("extends") == f"_{name}" for d in SHIPPED.values()):
            (cli.profiles / "models" / f"_{name}.toml").write_text(tomli_w.dumps(data))
    return cli


@pytest.fixture(scope="module")
def fuzz_env(fuzz_cli: Cli) -> dict[str, str]:
    return {
        "ORCH_PROFILES_DIR": str(fuzz_cli.profiles),
        "ORCH_TEMPLATES_DIR": str(PROFILES.parent / "templates"),
        "ORCH_STATE_DIR": str(fuzz_cli.state),
        "ORCH_CONFIG": str(fuzz_cli.root / "no-orch.toml"),
    }


COMMANDS = [("validate",), ("plan", "--dry-run", "fuzz"), ("plan", "--dry-run", "--json", "fuzz")]


@FUZZ
@given(text=profiles(), argv=st.sampled_from(COMMANDS))
def test_mutated_profiles(
    fuzz_cli: Cli, fuzz_env: dict[str, str], text: bytes, argv: tuple[str, ...]
) -> None:
    (fuzz_cli.profiles / "models" / "fuzz.toml").write_bytes(text)
    result = fuzz_cli.run(*argv, env=fuzz_env)
    assert result.code in EXIT_CODES, (argv, result)


FLAGS = [
    "-c", "--ctx-size", "-ngl", "--n-gpu-layers", "-ot", "--override-tensor", "-ub", "-b",
    "-np", "--parallel", "-ctk", "-ctv", "-fa", "--cpu-moe", "--n-cpu-moe", "-ts", "-sm",
    "--load-mode", "--no-mmap", "--mlock", "--cache-ram", "-kvu", "--no-repack", "--turbo",
    "--api-key", "-m", "x", "",
]  # fmt: skip
arguments = st.lists(
    st.one_of(
        st.sampled_from(FLAGS),
        st.sampled_from(ODD_STRINGS),
        st.sampled_from([str(n) for n in ODD_NUMBERS] + ["99", "auto", "all", "1,1", "exps=CPU"]),
        st.text(max_size=8),
    ),
    max_size=8,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MoE GGUF without a vocabulary: its header reads in milliseconds."""
    import gguf
    import numpy as np

    from orchestrator.synthetic import TINY_MOE, tensor_specs

    spec = TINY_MOE
    path = tmp_path_factory.mktemp("fuzz-gguf") / "tiny-moe.gguf"
    writer = gguf.GGUFWriter(str(path), spec.arch)
    writer.add_context_length(spec.ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_key_length(spec.head_dim)
    writer.add_expert_count(spec.n_expert)
    writer.add_expert_used_count(spec.n_expert_used)
    writer.add_expert_feed_forward_length(spec.n_ff_exp)
    for t in tensor_specs(spec):
        writer.add_tensor(t.name, np.zeros(tuple(reversed(t.shape)), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@settings(FUZZ, max_examples=1000)
@given(args=arguments, hardware=st.sampled_from([None, "epyc9175f-2x-rtxpro6000", "nope"]))
def test_estimate_arguments(
    fuzz_cli: Cli, fuzz_env: dict[str, str], tiny: Path, args: list[str], hardware: str | None
) -> None:
    options = ("--hardware", hardware) if hardware else ()
    result = fuzz_cli.run("estimate", str(tiny), *options, "--", *args, env=fuzz_env)
    assert result.code in EXIT_CODES, (args, result)
