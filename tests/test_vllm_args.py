"""vLLM's own ``vllm serve`` parser accepts the command lines orch renders, with orch's values.

The parser is the real one: ``tests/vllm_argcheck.py`` runs under ``.venv-vllm`` (vLLM 0.33.0
and a CPU torch, made by ``scripts/install-vllm-argparser.sh`` / ``make vllm-argparser``) and
builds it the way ``vllm serve`` does. All command lines go to one batch run, so vLLM's import
(~10 s) is paid once. A missing ``.venv-vllm`` fails these tests; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import pytest

from orchestrator.flagcatalogue import load_catalogue
from orchestrator.instances import engine_env
from orchestrator.plan import Plan, build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.profiles.schema import PodmanRuntime, VllmEngine
from orchestrator.render import make_environment
from tests.conftest import GOLDEN, PROFILES, REPO, TEMPLATES

VENV_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
ARGCHECK = REPO / "tests" / "vllm_argcheck.py"
INSTALL = "run scripts/install-vllm-argparser.sh (or make vllm-argparser)"
VLLM_VERSION = "0.33.0"

SHIPPED = [
    name
    for name in Catalog(PROFILES).model_names()
    if isinstance(Catalog(PROFILES).load(name).profile.engine, VllmEngine)
]

# Variants the shipped profiles do not cover: the podman wrapping, TP > 1, an fp8 KV cache,
# a served name, extra_args; and an API key file.
VARIANTS = {
    "vllm-podman-tp2-fp8": """\
description = "test: vLLM in podman on two GPUs with an fp8 KV cache"
architecture = "qwen3-coder-next"
hardware = "epyc9175f-2x-rtxpro6000"

[model]
hf_repo = "vincentzed-hf/Qwen3-Coder-Next-NVFP4"
quant = "NVFP4"

[engine]
kind = "vllm"
dtype = "bfloat16"
gpu_memory_utilization = 0.85
max_num_seqs = 4
max_model_len = 65536
tensor_parallel_size = 2
kv_cache_dtype = "fp8"
enable_prefix_caching = true
served_model_name = "qwen3-coder"
extra_args = ["--max-num-batched-tokens", "8192", "--enforce-eager"]

[runtime]
kind = "podman"
image = "docker.io/vllm/vllm-openai:v0.33.0"
container_port = 8000
devices = ["nvidia.com/gpu=all"]
shm_size = "16g"

[publish]
port = 8001
""",
    "vllm-api-key-file": """\
description = "test: vLLM reading its API key from a file"
extends = "qwen3-coder-next-nvfp4"

[secrets]
api_key_file = "/etc/orch/vllm.key"
""",
    "vllm-prefix-caching-off": """description = "test: vLLM with prefix caching turned off"
extends = "qwen3-coder-next-nvfp4"

[engine]
enable_prefix_caching = false
""",
}

BOGUS = "--orch-no-such-flag"


def serve_args(argv: Sequence[str], plan: Plan) -> list[str]:
    """What follows ``vllm serve`` in a full argv.

    A process runs ``[numactl …] BINARY serve MODEL FLAGS``; podman runs
    ``podman run … IMAGE MODEL FLAGS`` (the image's entrypoint is ``vllm serve``, as
    vllm/vllm-openai's is).
    """
    engine, runtime = plan.profile.engine, plan.profile.runtime
    assert isinstance(engine, VllmEngine)
    if isinstance(runtime, PodmanRuntime):
        return list(argv[list(argv).index(runtime.image) + 1 :])
    for i in range(len(argv) - 1):
        if argv[i] == engine.binary and argv[i + 1] == "serve":
            return list(argv[i + 2 :])
    raise AssertionError(f"no {engine.binary!r} followed by 'serve' in {list(argv)}")


def _stable(argv: Sequence[str]) -> list[str]:
    return [a.replace(str(Path.home()), "$HOME") for a in argv]


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Plan]:
    root = tmp_path_factory.mktemp("vllm-profiles") / "profiles"
    shutil.copytree(PROFILES, root)
    for name, text in VARIANTS.items():
        (root / "models" / f"{name}.toml").write_text(text, encoding="utf-8")
    catalog, env = Catalog(root), make_environment(TEMPLATES)
    return {name: build_plan(catalog.load(name), env) for name in [*SHIPPED, *VARIANTS]}


def run_argcheck(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if not os.access(VENV_PYTHON, os.X_OK):
        pytest.fail(f"vLLM's argument parser is not installed ({VENV_PYTHON} missing): {INSTALL}")
    return subprocess.run(
        [str(VENV_PYTHON), str(ARGCHECK), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def vllm(plans: dict[str, Plan]) -> dict[str, Any]:
    """One batch run: vLLM's version, its serve option strings, a result per case."""
    cases = {name: serve_args(plan.argv, plan) for name, plan in plans.items()}
    shipped = cases[SHIPPED[0]]
    cases["bogus-flag"] = [*shipped, BOGUS]
    cases["bogus-value"] = [*shipped, "--dtype", "float7"]
    done = run_argcheck("--orch-batch", stdin=json.dumps(list(cases.values())))
    if done.returncode != 0:
        pytest.fail(f"tests/vllm_argcheck.py --orch-batch failed:\n{done.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    answer["by_name"] = dict(zip(cases, answer["results"], strict=True))
    return answer


def test_there_are_vllm_profiles() -> None:
    assert SHIPPED, "no shipped vLLM profile found"


def test_the_installed_vllm_is_the_pinned_one(vllm: dict[str, Any]) -> None:
    assert vllm["vllm"] == VLLM_VERSION, f"{vllm['vllm']} in .venv-vllm: {INSTALL}"


@pytest.mark.parametrize("name", SHIPPED)
def test_checked_args_are_the_golden_ones(name: str, plans: dict[str, Plan]) -> None:
    plan = plans[name]
    golden = json.loads((GOLDEN / "plans" / name / "argv.json").read_text(encoding="utf-8"))
    in_podman = isinstance(plan.profile.runtime, PodmanRuntime)
    assert (plan.engine_argv[0] == "serve") is not in_podman
    expected = _stable(plan.engine_argv[0 if in_podman else 1 :])
    assert _stable(serve_args(plan.argv, plan)) == expected
    assert serve_args(golden, plan) == expected


@pytest.mark.parametrize("name", [*SHIPPED, *VARIANTS])
def test_vllm_accepts_the_rendered_args(name: str, vllm: dict[str, Any]) -> None:
    result = vllm["by_name"][name]
    assert result["ok"], f"vllm serve rejects {name}'s args {result['argv']}:\n{result['error']}"
    assert result["deprecated"] == [], f"{name} uses deprecated vllm flags"


@pytest.mark.parametrize("name", [*SHIPPED, *VARIANTS])
def test_vllm_parses_orchs_values(name: str, plans: dict[str, Plan], vllm: dict[str, Any]) -> None:
    plan, result = plans[name], vllm["by_name"][name]
    assert result["ok"], result["error"]
    got, e = result["args"], plan.profile.engine
    assert isinstance(e, VllmEngine)
    runtime = plan.profile.runtime
    in_podman = isinstance(runtime, PodmanRuntime)
    model = plan.profile.model.path or plan.profile.model.hf_repo
    expected = {
        "model_tag": model,
        "model": model,
        "host": "0.0.0.0" if in_podman else plan.host,
        "port": runtime.container_port if isinstance(runtime, PodmanRuntime) else plan.port,
        "dtype": e.dtype,
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "tensor_parallel_size": e.tensor_parallel_size,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "kv_cache_dtype": e.kv_cache_dtype,
        "trust_remote_code": e.trust_remote_code,
        "enable_auto_tool_choice": e.enable_auto_tool_choice,
        "tool_call_parser": e.tool_call_parser,
        # the profile's own name unless it sets one: clients see a real name, not a path
        "served_model_name": [e.served_model_name or plan.name],
    }
    assert {k: got[k] for k in expected} == expected
    if e.enable_prefix_caching is not None:  # None: vLLM's own default
        assert got["enable_prefix_caching"] is e.enable_prefix_caching
    if "--max-num-batched-tokens" in e.extra_args:
        at = e.extra_args.index("--max-num-batched-tokens")
        assert got["max_num_batched_tokens"] == int(e.extra_args[at + 1])
    if "--enforce-eager" in e.extra_args:
        assert got["enforce_eager"] is True


def test_prefix_caching_off_reaches_vllm(vllm: dict[str, Any]) -> None:
    assert vllm["by_name"]["vllm-prefix-caching-off"]["args"]["enable_prefix_caching"] is False


def test_api_key_file_reaches_vllm_through_its_environment(
    plans: dict[str, Plan], tmp_path: Path
) -> None:
    plan = plans["vllm-api-key-file"]
    assert plan.secret_env == ("VLLM_API_KEY",)
    # no key, no key path in argv (the served name is the profile's, "vllm-api-key-file")
    assert not any("key" in a for a in plan.engine_argv if a != plan.name)
    key_file = tmp_path / "vllm.key"
    key_file.write_text("# the serving key\nk-123\n")
    secrets = plan.profile.secrets.model_copy(update={"api_key_file": str(key_file)})
    profile = plan.profile.model_copy(update={"secrets": secrets})
    env = engine_env(replace(plan, profile=profile), {})
    assert env["VLLM_API_KEY"] == "k-123"


def test_an_unknown_flag_is_rejected(vllm: dict[str, Any]) -> None:
    result = vllm["by_name"]["bogus-flag"]
    assert not result["ok"]
    assert result["exit_code"] == 2
    assert f"unrecognized arguments: {BOGUS}" in result["error"]


def test_a_bad_value_is_rejected(vllm: dict[str, Any]) -> None:
    result = vllm["by_name"]["bogus-value"]
    assert not result["ok"]
    assert result["exit_code"] == 2
    assert "argument --dtype: invalid choice: 'float7'" in result["error"]


@pytest.mark.parametrize("field", ["dtype", "kv_cache_dtype"])
def test_every_value_orch_allows_is_a_vllm_value(field: str, vllm: dict[str, Any]) -> None:
    allowed = set(get_args(VllmEngine.model_fields[field].annotation))
    assert allowed, f"VllmEngine.{field} is not a Literal"
    if field == "dtype":
        known = set(vllm["choices"]["--dtype"])
    else:
        known = set(vllm["kv_cache_dtypes"])
    assert allowed <= known, f"{field}: {sorted(allowed - known)} are not vLLM values"


def test_argcheck_command_line_rejects_an_unknown_flag() -> None:
    done = run_argcheck("some/model", "--max-model-len", "1024", BOGUS)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"unrecognized arguments: {BOGUS}" in done.stderr
    assert done.stdout == ""


def test_flag_catalogue_matches_vllm(vllm: dict[str, Any]) -> None:
    catalogue = load_catalogue("vllm")
    missing = catalogue.spellings - set(vllm["options"])
    assert not missing, (
        f"flags-vllm.txt lists flags vllm serve {vllm['vllm']} does not have: {sorted(missing)}"
    )
    unlisted = set(vllm["options"]) - catalogue.spellings
    assert not unlisted, f"vllm serve takes flags flags-vllm.txt lacks: {sorted(unlisted)}"


def test_flag_catalogue_regenerates_unchanged() -> None:
    if not VENV_PYTHON.exists():
        pytest.fail(f"{VENV_PYTHON} is missing: {INSTALL}")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "flag-catalogue.py"), "vllm", "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        "orchestrator/data/flags-vllm.txt differs from vLLM's parser "
        f"(regenerate: scripts/flag-catalogue.py vllm):\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    )


def test_rendered_prefix_caching_off_is_the_documented_spelling(plans: dict[str, Plan]) -> None:
    argv = plans["vllm-prefix-caching-off"].engine_argv
    assert "--disable-prefix-caching" in argv and "--no-enable-prefix-caching" not in argv
