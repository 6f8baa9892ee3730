"""Class 3: injection into systemd units, TOML files orch writes, and the terminal."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from orchestrator.synthetic import TINY_DENSE, write_gguf
from orchestrator.units import quote_word
from tests.hostile import GOOD, PODMAN, Case, Cli, add, bad, cli, ids

__all__ = ["cli"]

CONTROL = "profiles hold none"

CASES = [
    bad(
        "newline in api_key_env adds ExecStartPre",
        GOOD + '\n[secrets]\napi_key_env = "K\\nExecStartPre=/bin/touch /tmp/pwned"\n',
        f"secrets.api_key_env: contains the control character U+000A; {CONTROL}",
        argv=("systemd", "bad", "--orch-path", "/usr/bin/true"),
    ),
    bad(
        "env name with '=' and a newline",
        add("runtime", 'env = { "A=1\\nExecStartPre=x" = "v" }'),
        f"runtime.env: has a key with the control character U+000A; {CONTROL}",
    ),
    bad(
        "env name with a space",
        add("runtime", 'env = { "A B" = "v" }'),
        "runtime.env.A B: not an environment variable name (letters, digits and _, not "
        "starting with a digit); name the variable, not its value",
    ),
    bad(
        "escape sequence in an env value",
        add("runtime", 'env = { GREETING = "\\u001b]0;pwned\\u0007" }', PODMAN),
        f"runtime.env.GREETING: contains the control character U+001B; {CONTROL}",
    ),
    bad(
        "escape sequence in the description",
        'description = "fast \\u001b[2J\\u001b[31mmodel"\n' + GOOD,
        f"description: contains the control character U+001B; {CONTROL}",
    ),
    bad(
        "bidi override in the description",
        'description = "safe \\u202eexe.txt"\n' + GOOD,
        f"description: contains the control character U+202E; {CONTROL}",
    ),
    bad(
        "carriage return in model.path",
        GOOD.replace('"/models/q.gguf"', '"/models/q\\r.gguf"'),
        f"model.path: contains the control character U+000D; {CONTROL}",
    ),
    bad(
        "escape sequence in a table key",
        '"x\\u001b[2J" = 1\n' + GOOD,
        f"(top level): has a key with the control character U+001B; {CONTROL}",
    ),
    Case(
        "escape sequence in a hardware profile",
        {
            "hardware/evil.toml": 'description = "\\u001b[2J"\n[cpu]\nmodel = "x"\nphysical_cores = 1\nthreads = 1\n[memory]\nram_gib = 8\n'
        },
        2,
        f"{{root}}/hardware/evil.toml: description: contains the control character U+001B; {CONTROL}",
        argv=("plan", "--dry-run", "--hardware", "evil", "demo"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_injected_value_is_refused(cli: Cli, case: Case) -> None:
    result = cli.check(case)
    assert "\x1b" not in result.out + result.err


def test_no_raw_escape_reaches_the_terminal(cli: Cli) -> None:
    """A profile *file name* with escapes: listed by validate, shown escaped."""
    cli.write({"models/x\x1b[2Jy.toml": GOOD})
    result = cli.run("validate")
    assert result.code == 2
    assert "\x1b" not in result.out + result.err
    assert "x\\x1b[2Jy" in result.out


def test_logs_are_shown_escaped(cli: Cli) -> None:
    log = cli.state / "logs" / "old.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"loading model 'evil\x1b]0;pwned\x07\x9b2J'\nready\n")
    result = cli.run("logs", "old")
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "evil\\x1b]0;pwned\\x07" in result.out


def _verify(unit: Path) -> str:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    return (done.stdout + done.stderr).strip()


def test_unit_words_cannot_add_directives(cli: Cli, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install -y systemd)")
    evil = tmp_path / "bin\nExecStartPre=touch pwned" / "orch"
    evil.parent.mkdir()
    evil.write_text("#!/bin/sh\n")
    evil.chmod(0o755)
    cli.write({"models/u.toml": 'description = "two\\nlines ending in \\\\"\n' + GOOD})
    refused = cli.run("systemd", "u", "--orch-path", str(evil))
    assert refused.code == 2 and refused.out == ""
    assert refused.err == (
        f"orch: error: orch path {str(evil)!r} holds a control character systemd refuses\n"
    ).replace("\\n", "\\x0a", 0)
    result = cli.run("systemd", "u", "--orch-path", "/usr/bin/true")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [line for line in lines if line.startswith(("Description=", "ExecStart"))] == [
        "Description=orch u: two lines ending in",
        "ExecStart=/usr/bin/true up --foreground u",
    ]
    unit = tmp_path / "orch-u.service"
    unit.write_text(result.out)
    assert _verify(unit) == ""
    assert quote_word("a\nb") == '"a\\x0ab"'  # and systemd keeps it on one line


def test_new_from_a_hostile_gguf_writes_only_its_keys(cli: Cli, tmp_path: Path) -> None:
    spec = dataclasses.replace(TINY_DENSE, name="evil\x1b]0;pwned\x07\nport = 1")
    gguf = write_gguf(spec, tmp_path / 'q" malicious = "1 [x].gguf')
    result = cli.run("new", "evil", "--from-gguf", str(gguf), "--hardware", "small-cpu")
    assert result.code == 0, result.err
    assert "\x1b" not in result.out + result.err
    for kind in ("models", "architectures"):
        text = (cli.profiles / kind / "evil.toml").read_text()
        assert "\x1b" not in text
        assert "malicious" not in tomllib.loads(text)
    model = tomllib.loads((cli.profiles / "models" / "evil.toml").read_text())
    assert set(model) == {"description", "architecture", "hardware", "model", "engine",
                          "runtime", "publish"}  # fmt: skip
    assert model["model"]["path"] == str(gguf)
    assert model["description"].startswith("evil\\x1b]0;pwned\\x07\\x0aport = 1 ")
    plan = cli.run("plan", "--dry-run", "evil")
    assert plan.code == 0, plan.err


def test_new_refuses_a_file_name_with_a_newline(cli: Cli, tmp_path: Path) -> None:
    gguf = write_gguf(TINY_DENSE, tmp_path / "m\nmalicious = true\n.gguf")
    result = cli.run("new", "nl", "--from-gguf", str(gguf), "--hardware", "small-cpu")
    assert (result.code, result.err) == (
        2,
        f"orch: error: {cli.profiles}/models/nl.toml: model.path: contains the control "
        "character U+000A; profiles hold none\n",
    )
    assert not (cli.profiles / "models" / "nl.toml").exists()


def test_new_refuses_a_hostile_architecture_name(cli: Cli, tmp_path: Path) -> None:
    gguf = write_gguf(TINY_DENSE, tmp_path / "arch.gguf")
    gguf.write_bytes(gguf.read_bytes().replace(b"llama", b"ll\nma"))  # same length: still valid
    result = cli.run("new", "arch", "--from-gguf", str(gguf), "--hardware", "small-cpu")
    assert (result.code, result.err) == (
        2,
        f"orch: error: {gguf}: cannot derive architecture facts: general.architecture: "
        "'ll\\nma' is not "
        "an architecture name (lower-case letters, digits, _ . -)\n",
    )
    assert not (cli.profiles / "models" / "arch.toml").exists()
