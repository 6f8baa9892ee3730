"""Golden files for every shipped profile: the command, the argv, and the memory plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.memory.breakdown import MIB
from orchestrator.plan import Plan
from orchestrator.profiles.loader import Catalog
from tests.conftest import GOLDEN, PROFILES, shipped_plan

PLANS = GOLDEN / "plans"
NAMES = Catalog(PROFILES).model_names()


def plan_for(name: str) -> Plan:
    return shipped_plan(name)


def golden_files(plan: Plan) -> dict[str, str]:
    memory = {
        device: {k: round(v / MIB) for k, v in dev.to_json().items()}
        for device, dev in plan.memory.devices.items()
    }
    summary = {
        "memory_mib": memory,
        "budget_fits": {b.device: b.fits for b in plan.budget},
        "facts": plan.memory.facts,
        "suggestions": list(plan.suggestions),
        "warnings": list(plan.warnings),
    }
    if plan.placement is not None:
        summary["placement"] = {
            "chosen": plan.placement.chosen.strategy if plan.placement.chosen else None,
            "considered": [
                {"strategy": c.strategy, "flags": c.flags, "fits": c.fits}
                for c in plan.placement.considered
            ],
        }
    return {
        "command.sh": plan.display() + "\n",
        "argv.json": json.dumps(list(plan.argv), indent=1) + "\n",
        "plan.json": json.dumps(summary, indent=1, sort_keys=True) + "\n",
    }


def _stable(text: str) -> str:
    # the demo's model lives under the user's home; container paths (/root/...) stay as they are
    return text.replace(str(Path.home() / ".cache" / "orch"), "$HOME/.cache/orch")


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str, update_golden: bool) -> None:
    folder = PLANS / name
    files = {k: _stable(v) for k, v in golden_files(plan_for(name)).items()}
    if update_golden:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for file_name, text in files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
    assert folder.is_dir(), f"no golden folder for {name}: run make golden"
    on_disk = {p.name for p in folder.iterdir()}
    assert on_disk == set(files), f"left over or missing golden files in {folder}"
    for file_name, text in files.items():
        assert (folder / file_name).read_text(encoding="utf-8") == text, f"{name}/{file_name}"


def test_no_golden_folder_without_a_profile() -> None:
    assert {p.name for p in PLANS.iterdir()} == set(NAMES)


def test_every_shipped_profile_fits_its_hardware() -> None:
    for name in NAMES:
        plan = plan_for(name)
        assert plan.fits, (name, plan.budget, plan.suggestions)


def test_published_ports_bind_loopback_by_default() -> None:
    for name in NAMES:
        plan = plan_for(name)
        if plan.profile.runtime.kind == "podman":
            publish = plan.argv[plan.argv.index("-p") + 1]
            assert publish.startswith("127.0.0.1:"), (name, publish)
        else:
            assert plan.engine_argv[plan.engine_argv.index("--host") + 1] == "127.0.0.1"
