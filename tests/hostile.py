"""Shared by the hostile-input tests: a good profile to break, and the real CLI in-process.

Each case is ``(name, files, argv, exit code, message)``: ``files`` are written under a copy
of the shipped profiles, ``orch ARGV`` runs through ``orchestrator.cli.main`` and must exit
with the code, print nothing but ``orch: error: MESSAGE`` on stderr (``{root}`` is the
profiles folder), and never raise.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import PROFILES, TEMPLATES

GOOD = """\
architecture = "qwen3-coder-next"
hardware = "epyc9175f-rtxpro6000"

[model]
path = "/models/q.gguf"
quant = "IQ4_NL"

[engine]
kind = "llama.cpp"
ctx = 8192

[runtime]
kind = "process"

[publish]
port = 8001
"""

VLLM = (
    GOOD.replace('path = "/models/q.gguf"', 'hf_repo = "org/model"')
    .replace('kind = "llama.cpp"\nctx = 8192', 'kind = "vllm"\nmax_model_len = 8192')
    .replace('quant = "IQ4_NL"', 'quant = "NVFP4"')
)

PODMAN = GOOD.replace('kind = "process"', 'kind = "podman"\nimage = "localhost/llama-server:1"')

BAD = "{root}/models/bad.toml"
PLAN = ("plan", "--dry-run", "bad")


def edit(old: str, new: str, base: str = GOOD) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def add(section: str, line: str, base: str = GOOD) -> str:
    return edit(f"[{section}]\n", f"[{section}]\n{line}\n", base)


@dataclass(frozen=True)
class Case:
    """One hostile input and the exact answer orch must give."""

    name: str
    files: Mapping[str, str | bytes]
    code: int
    message: str
    argv: tuple[str, ...] = PLAN
    env: Mapping[str, str] = field(default_factory=dict)


def bad(
    name: str,
    text: str | bytes,
    message: str,
    *,
    code: int = 2,
    argv: tuple[str, ...] = PLAN,
    env: Mapping[str, str] | None = None,
) -> Case:
    """A case about models/bad.toml: its message starts with that file's path."""
    return Case(name, {"models/bad.toml": text}, code, f"{BAD}: {message}", argv, env or {})


def ids(cases: list[Case]) -> list[str]:
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    return [c.name for c in cases]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Cli:
    """``orch`` against a private copy of the profiles, run in-process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.profiles = root / "profiles"
        self.state = root / "state"

    def write(self, files: Mapping[str, str | bytes]) -> None:
        for relative, content in files.items():
            path = self.profiles / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")

    def run(self, *argv: str, env: Mapping[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(argv))  # any other exception fails the test
                except SystemExit as exc:  # argparse's own usage errors
                    code = exc.code if isinstance(exc.code, int) else 2
        finally:
            os.environ.clear()
            os.environ.update(saved)
        result = Result(code, out.getvalue(), err.getvalue())
        assert "Traceback" not in result.out + result.err
        return result

    def check(self, case: Case) -> Result:
        """Run a case and assert its exit code and its exact message."""
        self.write(case.files)
        result = self.run(*case.argv, env=case.env)
        expected = case.message.format(root=self.profiles)
        assert (result.code, result.err) == (case.code, f"orch: error: {expected}\n"), result.out
        return result


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    orch = Cli(tmp_path)
    shutil.copytree(PROFILES, orch.profiles)
    for var in list(os.environ):
        if var.startswith("ORCH_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(orch.profiles))
    monkeypatch.setenv("ORCH_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.setenv("ORCH_STATE_DIR", str(orch.state))
    monkeypatch.setenv("ORCH_CONFIG", str(tmp_path / "no-orch.toml"))
    yield orch
