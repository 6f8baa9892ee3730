"""The README and ``--help`` examples stay true: run them and compare."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from tests.conftest import PROFILES, REPO, TEMPLATES

README = (REPO / "README.md").read_text(encoding="utf-8")


def orch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def block_after(heading: str) -> str:
    """The first fenced block after a heading."""
    rest = README[README.index(heading) :]
    match = re.search(r"```[a-z]*\n(.*?)```", rest, re.S)
    assert match, heading
    return match.group(1)


def command_lines() -> list[tuple[str, list[str]]]:
    """``(sub-command, flags)`` for every command the README's command list shows."""
    out = []
    for line in block_after("## Commands").splitlines():
        usage = re.split(r"\s{2,}", line.strip())[0]
        for part in usage.split(" / "):
            words = part.removeprefix("orch ").split()
            out.append((words[0], [w.strip("[]|") for w in words[1:] if w.startswith(("[-", "-"))]))
    return out


@pytest.mark.parametrize(("command", "flags"), command_lines(), ids=lambda v: str(v))
def test_command_list_matches_help(command: str, flags: list[str]) -> None:
    done = orch(command, "--help")
    assert done.returncode == 0, done.stderr
    for flag in flags:
        name = flag.split()[0].split("=")[0].rstrip("]")
        assert re.search(rf"(^|[\s,\[]){re.escape(name)}\b", done.stdout), (command, name)


def test_plan_example_is_the_real_output() -> None:
    example = block_after("## What it does").splitlines()
    command = example[0].removeprefix("$ ").split()
    assert command[0] == "orch"
    done = orch(*command[1:])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    position = 0
    for shown in example[1:]:
        if shown.strip() == "...":
            continue
        position = lines.index(shown, position) + 1  # in order, verbatim


def help_examples(*command: str) -> list[list[str]]:
    """The ``orch ...`` example lines of a ``--help`` epilog that need no running engine."""
    text = orch(*command, "--help").stdout
    found = []
    for line in text.splitlines():
        words = line.strip().split("  ")[0].split()
        if words[:1] == ["orch"] and ("--dry-run" in words or words[1:2] == ["validate"]):
            found.append(words[1:])
    return found


def test_help_examples_run() -> None:
    examples = help_examples() + help_examples("plan")
    assert ["plan", "--dry-run", "--placement", "auto", "qwen35-397b-iq4-2gpu"] in examples
    for args in examples:
        done = orch(*args)
        assert done.returncode == 0, (args, done.stderr)


def test_auto_placement_figures_in_readme() -> None:
    env = make_environment(TEMPLATES)
    catalog = Catalog(PROFILES)
    single = build_plan(catalog.load("qwen35-397b-iq4-auto"), env).placement
    double = build_plan(catalog.load("qwen35-397b-iq4-2gpu-auto"), env).placement
    assert single and single.chosen and double and double.chosen
    k = single.chosen.settings["n_cpu_moe"]
    assert f"`--n-cpu-moe {k}` at an estimated {single.chosen.tokens_per_s:.1f} tok/s" in README
    assert f"at an estimated\n  {double.chosen.tokens_per_s:.1f} tok/s" in README
    kept = re.findall(r"CUDA\d (\d+)", double.chosen.what)
    assert f"keeping {' + '.join(kept)} layers' experts" in README
