"""Every seed command (tests/seeds/NAME.sh, from the lab notes) is what orch renders for NAME.

Allowed differences, all deliberate: orch runs containers detached, named, labelled and with
--init instead of --rm -it; publishes on 127.0.0.1 unless a profile says otherwise; adds
--metrics (for `orch status`) and an explicit --host/--port; names the model after the profile
(--alias, --served-model-name) so clients see a real name; makes vLLM's defaults explicit;
and gives a container that locks its weights (--mlock) what locking needs (--cap-add=IPC_LOCK,
--ulimit memlock=-1:-1), without which the seed's command locks nothing beyond 8 MiB.
Everything else (every flag and value) must match.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.engines import adapter_for
from orchestrator.plan import Plan, build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from tests.conftest import PROFILES, TEMPLATES, shipped_plan

SEEDS = Path(__file__).parent / "seeds"
NAMES = sorted(p.stem for p in SEEDS.glob("*.sh"))

ORCH_ADDS = {"-d", "--name", "--label", "--init", "--metrics", "--alias", "--served-model-name"}
SEED_ONLY = {"--rm", "-it"}
ORCH_ENGINE_DEFAULTS = {"--dtype", "--gpu-memory-utilization", "--host", "--port"}
BOOL_FLAGS = {
    "--rm",
    "-it",
    "-d",
    "--init",
    "--jinja",
    "--cpu-moe",
    "--no-mmap",
    "--mlock",
    "--metrics",
    "-ger",
    "--enable-prefix-caching",
    "--trust-remote-code",
    "--enable-auto-tool-choice",
}


def pairs(
    words: list[str], canonical: Callable[[str], str] = lambda flag: flag
) -> Counter[tuple[str, str]]:
    """(flag, value) pairs; ``canonical`` maps each flag to one spelling of its aliases."""
    out: Counter[tuple[str, str]] = Counter()
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            name, eq, value = word.partition("=")
            if eq:
                out[(canonical(name), value)] += 1
                i += 1
            elif name in BOOL_FLAGS or i + 1 >= len(words) or words[i + 1].startswith("-"):
                out[(canonical(name), "")] += 1
                i += 1
            else:
                out[(canonical(name), words[i + 1])] += 1
                i += 2
        else:
            out[("", word)] += 1
            i += 1
    return out


def seed_words(name: str, plan: Plan) -> list[str]:
    text = "\n".join(
        line for line in (SEEDS / f"{name}.sh").read_text().splitlines() if not line.startswith("#")
    )
    profile = plan.profile
    runtime = profile.runtime
    model = profile.model
    if plan.weights is not None:  # a Hugging Face cache: the seed mounts the repo folder ($MO)
        mount_root = plan.weights.repo_dir
        container_model = "/models/" + plan.weights.relative_path
    else:
        mount_root = model.mount_root or str(Path(model.path).parent)
        container_model = "/models/" + str(Path(model.path).relative_to(mount_root))
    values = {  # longest names first: $MO is a prefix of $MODEL
        "MODEL": container_model,
        "model": plan.model_file,
        "IMG": getattr(runtime, "image", ""),
        "MO": mount_root,
    }
    for var, value in values.items():
        text = text.replace(f'"${var}"', value).replace(f"${var}", value)
    return shlex.split(text.replace("\\\n", " "))


def split_at_image(words: list[str], plan: Plan) -> tuple[list[str], list[str]]:
    image = getattr(plan.profile.runtime, "image", None)
    if image and image in words:
        i = words.index(image)
        return words[:i], words[i + 1 :]
    return [], words


@pytest.mark.parametrize("name", NAMES)
def test_seed_command_matches(name: str) -> None:
    plan = shipped_plan(name)
    seed_outer, seed_engine = split_at_image(seed_words(name, plan), plan)
    orch_outer, orch_engine = split_at_image(list(plan.argv), plan)

    # alias-aware: -c and --ctx-size are one flag, in the engine's own catalogue
    canonical = adapter_for(plan.profile.engine).catalogue.canonical
    seed_e, orch_e = pairs(seed_engine, canonical), pairs(orch_engine, canonical)
    # program words: the binary (path differs for process runs) and `serve MODEL`
    seed_e = Counter(
        {k: v for k, v in seed_e.items() if k[0] or k[1] in ("serve", plan.profile.model.hf_repo)}
    )
    orch_e = Counter(
        {k: v for k, v in orch_e.items() if k[0] or k[1] in ("serve", plan.profile.model.hf_repo)}
    )
    missing = seed_e - orch_e
    extra = orch_e - seed_e
    if name == "qwen35-397b-iq4-codegen":
        assert extra == Counter(
            {("--cpu-moe", ""): 1, ("--metrics", ""): 1, ("--alias", "qwen35-397b-iq4-codegen"): 1}
        )
        extra = Counter()
    assert not missing, f"orch lost seed flags: {sorted(missing)}"
    assert all(flag in ORCH_ADDS | ORCH_ENGINE_DEFAULTS for flag, _ in extra), sorted(extra)

    seed_o, orch_o = pairs(seed_outer), pairs(orch_outer)
    seed_o = Counter({k: v for k, v in seed_o.items() if k[0] not in SEED_ONLY})
    orch_o = Counter({k: v for k, v in orch_o.items() if k[0] not in ORCH_ADDS})
    if ("--mlock", "") in seed_e:
        assert orch_o.pop(("--cap-add", "IPC_LOCK")) == 1
        assert orch_o.pop(("--ulimit", "memlock=-1:-1")) == 1
    for key in list(seed_o):
        if key[0] == "-p":
            seed_o[("-p", "127.0.0.1:" + key[1])] += seed_o.pop(key)
    assert seed_o == orch_o


def test_codegen_seed_as_written_is_refused() -> None:
    """The seed's Django command has no --cpu-moe: ~200 GiB of weights on one 96 GB GPU."""
    resolved = Catalog(PROFILES).load("qwen35-397b-iq4-codegen")
    engine = resolved.profile.engine.model_copy(update={"cpu_moe": False})
    literal = resolved.profile.model_copy(update={"engine": engine})
    from dataclasses import replace

    plan = build_plan(replace(resolved, profile=literal), make_environment(TEMPLATES))
    assert not plan.fits
    gpu = next(b for b in plan.budget if b.device == "CUDA0")
    assert gpu.need > 150 * 2**30
    assert any("cpu_moe = true" in s for s in plan.suggestions)


def test_seed_003_mounts_the_repo_folder_and_names_the_snapshot() -> None:
    """Seed 003: MO=/mnt/data/hf/hub/models--ubergarm--Qwen3.5-397B-A17B-GGUF and
    MODEL=/models/snapshots/.../IQ4_KSS/Qwen3.5-397B-A17B-IQ4_KSS-00001-of-00006.gguf."""
    plan = shipped_plan("qwen35-397b-iq4")
    argv = list(plan.argv)
    assert argv[argv.index("-v") + 1] == (
        "/mnt/data/hf/hub/models--ubergarm--Qwen3.5-397B-A17B-GGUF:/models:ro,Z"
    )
    model = argv[argv.index("--model") + 1]
    assert model.startswith("/models/snapshots/")
    assert model.endswith("/IQ4_KSS/Qwen3.5-397B-A17B-IQ4_KSS-00001-of-00006.gguf")
