"""Class 5: a value with a leading '-' never lands where a command reads options."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.render import TemplateError, make_environment, render_argv
from tests.conftest import TEMPLATES
from tests.hostile import GOOD, PODMAN, VLLM, Case, Cli, add, bad, cli, edit, ids

__all__ = ["cli"]


def dash(key: str, value: str) -> str:
    return f"{key}: {value!r} starts with '-', so it would be read as an option"


CASES = [
    bad(
        "vllm repo as a flag",
        edit('hf_repo = "org/model"', 'hf_repo = "--trust-remote-code"', VLLM),
        "model.hf_repo: '--trust-remote-code' is not a Hugging Face repo id like ORG/NAME",
    ),
    bad(
        "hf revision as a flag",
        add("model", 'revision = "--trust-remote-code"', VLLM),
        "model.revision: '--trust-remote-code' is not a branch, tag or commit hash",
    ),
    bad(
        "vllm path as a flag",
        edit('hf_repo = "org/model"', 'path = "-x"', VLLM),
        dash("model.path", "-x"),
    ),
    bad(
        "gguf path as a flag",
        edit('path = "/models/q.gguf"', 'path = "--mlock.gguf"'),
        dash("model.path", "--mlock.gguf"),
    ),
    bad(
        "podman image as a flag",
        edit('image = "localhost/llama-server:1"', 'image = "--privileged"', PODMAN),
        dash("runtime.image", "--privileged"),
    ),
    bad(
        "podman image with words",
        edit('image = "localhost/llama-server:1"', 'image = "x --privileged"', PODMAN),
        "runtime.image: 'x --privileged' is not an image reference (like localhost/name:tag)",
    ),
    bad(
        "podman device as a flag",
        add("runtime", 'devices = ["--privileged"]', PODMAN),
        dash("runtime.devices[0]", "--privileged"),
    ),
    bad(
        "served name as a flag",
        add("engine", 'served_model_name = "--enable-lora"', VLLM),
        dash("engine.served_model_name", "--enable-lora"),
    ),
    bad(
        "tool parser as a flag",
        add("engine", 'enable_auto_tool_choice = true\ntool_call_parser = "-x"', VLLM),
        dash("engine.tool_call_parser", "-x"),
    ),
    bad(
        "binary as a flag",
        add("engine", 'binary = "--version"'),
        dash("engine.binary", "--version"),
    ),
    bad(
        "empty binary",
        add("engine", 'binary = ""'),
        "engine.binary: empty",
    ),
    bad(
        "key file as a flag",
        GOOD + '\n[secrets]\napi_key_file = "--api-key"\n',
        dash("secrets.api_key_file", "--api-key"),
    ),
    bad(
        "cap_add with an option",
        add("runtime", 'cap_add = ["ALL --privileged"]', PODMAN),
        "runtime.cap_add[0]: 'ALL --privileged' does not match ^[A-Za-z_]+$",
    ),
    bad(
        "physcpubind with an option",
        GOOD + '\n[numactl]\nphyscpubind = "--all"\n',
        "numactl.physcpubind: '--all' does not match ^\\d+(-\\d+)?(,\\d+(-\\d+)?)*$",
    ),
    bad(
        "health path as a URL",
        GOOD + '\n[health]\npath = "http://evil/"\n',
        "health.path: 'http://evil/' does not match ^/[!-~]*$",
    ),
    Case(
        "estimate: a positional after --",
        {},
        2,
        "unexpected argument 'model.gguf' (llama-server takes no positionals)",
        argv=("estimate", "{gguf}", "--", "-c", "512", "model.gguf"),
    ),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from orchestrator.synthetic import TINY_DENSE, write_gguf

    return write_gguf(TINY_DENSE, tmp_path_factory.mktemp("dash") / "tiny.gguf")


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_leading_dash_is_refused(cli: Cli, tiny: Path, case: Case) -> None:
    argv = tuple(a.replace("{gguf}", str(tiny)) for a in case.argv)
    cli.check(Case(case.name, case.files, case.code, case.message, argv, case.env))


@pytest.mark.parametrize("template", ["runtimes/process.j2"])
def test_positional_slots_refuse_options_when_rendering(template: str) -> None:
    env = make_environment(TEMPLATES)
    with pytest.raises(TemplateError) as info:
        render_argv(env, template, {"numactl_args": [], "binary": "--x", "engine_args": []})
    assert str(info.value) == f"{template}: '--x' in a positional slot would be read as an option"
