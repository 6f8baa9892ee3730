"""Rendering: argv elements survive any characters; the display form paste-runs in bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import TemplateError, display, make_environment, redact, render_argv
from tests.conftest import PROFILES, TEMPLATES

NASTY = [
    "has space",
    'it\'s "quoted"',
    "$(touch /tmp/pwned)",
    "--leading-dashes",
    "a\nnewline",
    "`id`",
    "*",
    "",
]


def bash_words(script_line: str) -> list[str]:
    script = f'set -- {script_line}\nfor a in "$@"; do printf \'%s\\0\' "$a"; done'
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


def test_values_stay_single_arguments(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{% for v in values %}{{ flag('--x') }}{{ arg(v) }}{% endfor %}")
    rendered = render_argv(make_environment(tmp_path), "t.j2", {"values": NASTY})
    expected: list[str] = []
    for v in NASTY:
        expected += ["--x", v]
    assert list(rendered.argv) == expected
    assert set(rendered.flags) == {"--x"}


def test_display_paste_runs_to_the_same_argv() -> None:
    argv = ["llama-server", "--alias", "my model", "--x", *NASTY, "--ctx-size", "8192"]
    assert bash_words(display(argv)) == argv


@pytest.mark.parametrize("name", Catalog(PROFILES).model_names())
def test_shipped_plans_paste_run(name: str) -> None:
    plan = build_plan(Catalog(PROFILES).load(name), make_environment(TEMPLATES))
    words = bash_words(plan.display())
    if plan.env:
        assert words[0] == "env"
        words = words[1 + len(plan.env) :]
    assert words == list(plan.argv)


def test_undefined_variable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{{ arg(missing) }}")
    with pytest.raises(TemplateError, match="'missing' is undefined"):
        render_argv(make_environment(tmp_path), "t.j2", {})


def test_stray_text_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("--ctx-size {{ arg(1) }}")
    with pytest.raises(TemplateError, match="stray text"):
        render_argv(make_environment(tmp_path), "t.j2", {})


def test_environment_is_strict(tmp_path: Path) -> None:
    assert make_environment(tmp_path).undefined is jinja2.StrictUndefined


def test_secrets_are_redacted() -> None:
    assert redact(["x", "--api-key", "s3", "--api-key=s4", "--port", "1"]) == [
        "x",
        "--api-key",
        "<redacted>",
        "--api-key=<redacted>",
        "--port",
        "1",
    ]


def test_api_key_from_env_never_reaches_argv(tmp_path: Path) -> None:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    text = (root / "models" / "qwen3-coder-next-bf16-cpu.toml").read_text()  # llama.cpp
    (root / "models" / "k.toml").write_text(text + '\n[secrets]\napi_key_env = "MY_KEY"\n')
    plan = build_plan(Catalog(root).load("k"), make_environment(TEMPLATES))
    assert plan.secret_env == ("LLAMA_API_KEY",)
    assert "-e" in plan.argv and "LLAMA_API_KEY" in plan.argv
    assert not any("=" in a and a.startswith("LLAMA_API_KEY") for a in plan.argv)


def test_api_key_file_is_mounted_read_only(tmp_path: Path) -> None:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    text = (root / "models" / "qwen35-397b-iq4.toml").read_text()
    (root / "models" / "k.toml").write_text(text + '\n[secrets]\napi_key_file = "/etc/orch/key"\n')
    plan = build_plan(Catalog(root).load("k"), make_environment(TEMPLATES))
    assert "/etc/orch/key:/run/secrets/orch-api-key:ro,Z" in plan.argv
    i = plan.argv.index("--api-key-file")
    assert plan.argv[i + 1] == "/run/secrets/orch-api-key"
