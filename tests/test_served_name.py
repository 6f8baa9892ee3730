"""The model id clients see is the profile name (--alias / --served-model-name), unless set."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.instances import model_name
from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from tests.conftest import PROFILES, TEMPLATES

CASES = [
    # (profile, engine changes, the id, its flag, how often the flag is in the argv)
    ("demo", {}, "demo", "--alias", 1),
    ("demo", {"extra_args": ("--alias", "tiny")}, "tiny", "--alias", 1),
    ("demo", {"extra_args": ("-a", "tiny")}, "tiny", "--alias", 0),
    ("demo", {"extra_args": ("--alias=tiny",)}, "tiny", "--alias", 0),
    ("qwen3-coder-next-nvfp4", {}, "qwen3-coder-next-nvfp4", "--served-model-name", 1),
    ("qwen3-coder-next-nvfp4", {"served_model_name": "coder"}, "coder", "--served-model-name", 1),
    (
        "qwen3-coder-next-nvfp4",
        {"extra_args": ("--served-model-name=coder",)},
        "coder",
        "--served-model-name",
        0,
    ),
]


@pytest.mark.parametrize(("name", "changes", "served", "flag", "count"), CASES)
def test_served_name(
    name: str, changes: dict[str, object], served: str, flag: str, count: int
) -> None:
    resolved = Catalog(PROFILES).load(name)
    engine = resolved.profile.engine.model_copy(update=changes)
    resolved = replace(resolved, profile=resolved.profile.model_copy(update={"engine": engine}))
    plan = build_plan(resolved, make_environment(TEMPLATES))
    assert model_name(plan) == served
    argv = list(plan.engine_argv)
    assert argv.count(flag) == count
    if count:
        assert argv[argv.index(flag) + 1] == served
