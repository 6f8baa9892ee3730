"""Profiles that name hf_repo / hf_file: resolution through a Hugging Face cache laid out as
huggingface_hub lays one out (refs/, snapshots/HASH/ links into blobs/), the commands orch
renders from it, and a real container started against it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.hfcache import HfWeights, hub_dir, locate, repo_folder, split_parts
from orchestrator.profiles.schema import ModelFile
from orchestrator.synthetic import SPECS, write_gguf
from tests.conftest import CONTAINERS_CONF, OrchEnv, free_port

REPO_ID = "test-org/Tiny-GGUF"
MAIN = "1" * 40
TAGGED = "2" * 40
FILE = "F16/tiny-00001-of-00002.gguf"


def make_cache(
    hub: Path, repo: str, commit: str, files: dict[str, Path | bytes], refs: tuple[str, ...]
) -> Path:
    """Add one snapshot of ``repo`` to ``hub`` the way huggingface_hub's downloads do.

    Each file's content goes to ``blobs/ETAG`` (an LFS file's etag is its sha256), the snapshot
    holds a relative symlink to it, and each ref names the commit (no newline).
    """
    folder = hub / repo_folder(repo)
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = blobs / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return folder


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny model as a two-part split GGUF."""
    folder = tmp_path_factory.mktemp("split")
    first = write_gguf(SPECS["tiny-dense"], folder / "tiny.gguf", split_max_tensors=12)
    parts = sorted(folder.glob("tiny-*-of-*.gguf"))
    assert first == parts[0] and len(parts) == 2
    return parts


@pytest.fixture
def hub(tmp_path: Path, split_model: list[Path]) -> Path:
    """A hub cache holding REPO_ID at two commits: MAIN (refs/main) and TAGGED (refs/v1.0)."""
    hub = tmp_path / "hf" / "hub"
    files: dict[str, Path | bytes] = {f"F16/{p.name}": p for p in split_model}
    files["README.md"] = b"# tiny\n"
    make_cache(hub, REPO_ID, MAIN, files, ("main",))
    make_cache(hub, REPO_ID, TAGGED, {f"F16/{split_model[0].name}": split_model[0]}, ("v1.0",))
    return hub


def model(revision: str = "main", file: str = FILE, repo: str = REPO_ID) -> ModelFile:
    return ModelFile(hf_repo=repo, hf_file=file, revision=revision, quant="F16")


# ---------------------------------------------------------------- the cache itself


def test_the_test_cache_is_laid_out_as_huggingface_hub_lays_one_out(hub: Path) -> None:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.file_download import repo_folder_name

    assert repo_folder(REPO_ID) == repo_folder_name(repo_id=REPO_ID, repo_type="model")
    info = scan_cache_dir(hub)
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO_ID
    revisions = {r.commit_hash: r for r in repo.revisions}
    assert set(revisions) == {MAIN, TAGGED}
    assert revisions[MAIN].refs == frozenset({"main"})
    assert revisions[TAGGED].refs == frozenset({"v1.0"})
    for file in revisions[MAIN].files:
        assert file.blob_path.parent == repo.repo_path / "blobs"
        assert file.file_path.is_symlink()


@pytest.mark.parametrize(
    ("revision", "commit", "parts_found"),
    [("main", MAIN, 2), ("v1.0", TAGGED, 1), (MAIN, MAIN, 2), (TAGGED, TAGGED, 1)],
    ids=["branch", "tag", "hash", "hash-without-ref"],
)
def test_revision_resolves_to_its_snapshot(
    hub: Path, revision: str, commit: str, parts_found: int
) -> None:
    weights = locate(model(revision), hub)
    assert weights.commit == commit
    assert weights.path == str(hub / repo_folder(REPO_ID) / "snapshots" / commit / FILE)
    assert weights.parts == split_parts(FILE) == (FILE, "F16/tiny-00002-of-00002.gguf")
    assert len(weights.parts) - len(weights.missing) == parts_found
    assert weights.cached is (parts_found == 2)
    # the snapshot's file is a link into the repo folder's blobs: mounting the repo folder
    # (not the snapshot) is what lets it resolve inside a container
    target = Path(weights.path).resolve()
    assert target.parent == (hub / repo_folder(REPO_ID) / "blobs").resolve()


def test_a_missing_part_is_named_with_the_command_that_fetches_it(hub: Path) -> None:
    weights = locate(model("v1.0"), hub)
    assert weights.missing == ("F16/tiny-00002-of-00002.gguf",)
    assert weights.download_command() == [
        "hf",
        "download",
        REPO_ID,
        "F16/tiny-00002-of-00002.gguf",
        "--revision",
        "v1.0",
    ]


@pytest.mark.parametrize(
    ("weights_model", "expected"),
    [
        (
            model(repo="test-org/Absent-GGUF"),
            "no snapshot of test-org/Absent-GGUF@main in the Hugging Face cache HUB; "
            "F16/tiny-00001-of-00002.gguf (2 parts) is fetched by: hf download "
            "test-org/Absent-GGUF --include 'F16/tiny-*-of-00002.gguf'",
        ),
        (
            model(file="F16/other.gguf"),
            f"{REPO_ID}@main ({MAIN[:12]}) in HUB lacks F16/other.gguf; F16/other.gguf is "
            f"fetched by: hf download {REPO_ID} F16/other.gguf",
        ),
        (
            model(revision="v2.0"),
            f"no snapshot of {REPO_ID}@v2.0 in the Hugging Face cache HUB; {FILE} (2 parts) is "
            f"fetched by: hf download {REPO_ID} --include 'F16/tiny-*-of-00002.gguf' "
            "--revision v2.0",
        ),
    ],
    ids=["no-repo", "no-file-in-snapshot", "no-such-revision"],
)
def test_missing_weights_say_which_and_how_to_fetch(
    hub: Path, weights_model: ModelFile, expected: str
) -> None:
    weights = locate(weights_model, hub)
    assert not weights.cached
    assert weights.missing_text() == expected.replace("HUB", str(hub))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "HOME/.cache/huggingface/hub"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"),
        ({"HF_HOME": "/hf-home"}, "/hf-home/hub"),
        ({"HF_HOME": "/hf-home", "HF_HUB_CACHE": "/hub-cache"}, "/hub-cache"),
        ({"HUGGINGFACE_HUB_CACHE": "/legacy"}, "/legacy"),
        ({"HF_HUB_CACHE": "~/hub"}, "HOME/hub"),
    ],
)
def test_hub_dir_follows_huggingface_hubs_own_rules(env: dict[str, str], expected: str) -> None:
    home = str(Path.home())
    assert str(hub_dir(env)) == expected.replace("HOME", home)
    # ... the same folder huggingface_hub itself computes in that environment
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    clean.pop("XDG_CACHE_HOME", None)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)",
        ],
        capture_output=True,
        text=True,
        env={**clean, **env},
        check=True,
    )
    assert done.stdout.strip() == expected.replace("HOME", home)


def test_a_whole_repo_for_vllm_is_cached_only_with_every_shard(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    files: dict[str, Path | bytes] = {
        "config.json": b"{}",
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": b"one",
    }
    make_cache(hub, "org/llm", MAIN, files, ("main",))
    vllm_model = ModelFile(hf_repo="org/llm", quant="NVFP4")
    weights = locate(vllm_model, hub)
    assert weights.commit == MAIN and weights.missing == ("model-00002-of-00002.safetensors",)
    make_cache(hub, "org/llm", MAIN, {"model-00002-of-00002.safetensors": b"two"}, ())
    assert locate(vllm_model, hub).cached


# ---------------------------------------------------------------- through orch


HF_PROFILE = """\
description = "test: weights from a Hugging Face cache"
architecture = "synthetic-tiny-dense"
hardware = "small-cpu"

[model]
hf_repo = "{repo}"
hf_file = "{file}"
revision = "{revision}"
quant = "F16"

[engine]
kind = "llama.cpp"
ctx = 512
parallel = 1
threads = 2
batch = 128
ubatch = 128
gpu_layers = 0
cache_ram_mib = 0

[runtime]
{runtime}

[publish]
port = {port}

[warmup]
requests = 1
max_tokens = 4
"""


def hf_profile(
    orch_env: OrchEnv,
    name: str,
    *,
    runtime: str = 'kind = "process"',
    revision: str = "main",
    file: str = FILE,
    port: int = 18999,
) -> None:
    orch_env.write_profile(
        name,
        HF_PROFILE.format(repo=REPO_ID, file=file, revision=revision, runtime=runtime, port=port),
    )


def plan_json(orch_env: OrchEnv, *args: str) -> dict[str, object]:
    done = orch_env.run("plan", "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "live"])
def test_plan_shows_the_snapshot_path_for_a_process(
    orch_env: OrchEnv, hub: Path, dry_run: bool
) -> None:
    hf_profile(orch_env, "hfp", port=free_port())
    orch_env.env["HF_HUB_CACHE"] = str(hub)
    data = plan_json(orch_env, *(["--dry-run"] if dry_run else []), "hfp")
    snapshot_file = str(hub / repo_folder(REPO_ID) / "snapshots" / MAIN / FILE)
    argv = data["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("--model") + 1] == snapshot_file
    assert data["model_file"] == snapshot_file
    hf = data["hf"]
    assert isinstance(hf, dict) and hf["commit"] == MAIN and hf["cached"] is True
    text = orch_env.run("plan", *(["--dry-run"] if dry_run else []), "hfp").stdout
    assert f"{REPO_ID}@main ({MAIN[:12]}): {snapshot_file}" in text
    # live: the header is read through the snapshot's links, both parts
    assert data["weights_source"] == (
        "architecture facts + F16 recipe (file not read)" if dry_run else "GGUF header (2 file(s))"
    )


def test_hf_home_is_honoured_when_hf_hub_cache_is_unset(orch_env: OrchEnv, hub: Path) -> None:
    hf_profile(orch_env, "hfh", revision="v1.0")
    orch_env.env.pop("HF_HUB_CACHE", None)
    orch_env.env["HF_HOME"] = str(hub.parent)  # HF_HOME/hub
    hf = plan_json(orch_env, "--dry-run", "hfh")["hf"]
    assert (
        isinstance(hf, dict)
        and hf["commit"] == TAGGED
        and hf["repo_dir"] == str(hub / repo_folder(REPO_ID))
    )


def test_podman_mounts_the_repo_folder_and_passes_the_snapshot_path(
    orch_env: OrchEnv, hub: Path
) -> None:
    hf_profile(orch_env, "hfc", runtime='kind = "podman"\nimage = "localhost/x"')
    orch_env.env["HF_HUB_CACHE"] = str(hub)
    argv = plan_json(orch_env, "--dry-run", "hfc")["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("-v") + 1] == f"{hub / repo_folder(REPO_ID)}:/models:ro,Z"
    assert argv[argv.index("--model") + 1] == f"/models/snapshots/{MAIN}/{FILE}"


def test_missing_weights_refuse_a_live_plan_and_name_the_download(
    orch_env: OrchEnv, tmp_path: Path
) -> None:
    hf_profile(orch_env, "hfm", port=free_port())
    orch_env.env["HF_HUB_CACHE"] = str(tmp_path / "empty-hub")
    download = f"hf download {REPO_ID} --include 'F16/tiny-*-of-00002.gguf'"

    dry = orch_env.run("plan", "--dry-run", "hfm")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert download in " ".join(dry.stdout.split())

    live = orch_env.run("plan", "hfm")
    assert live.returncode == 4, live.stdout + live.stderr
    assert download in " ".join(live.stdout.split())

    up = orch_env.run("up", "hfm")
    assert up.returncode == 4, up.stdout + up.stderr
    assert f"model not in the Hugging Face cache: no snapshot of {REPO_ID}@main" in up.stderr
    assert download in up.stderr


VLLM_PODMAN = """\
description = "test: vLLM in podman from the host's Hugging Face cache"
architecture = "qwen3-coder-next"
hardware = "epyc9175f-rtxpro6000"

[model]
hf_repo = "org/llm"
quant = "NVFP4"

[engine]
kind = "vllm"
max_model_len = 1024

[runtime]
kind = "podman"
image = "docker.io/vllm/vllm-openai:latest"
container_port = 8000
hf_home = "/hf"
devices = ["nvidia.com/gpu=all"]

[publish]
port = 8000
"""


def test_vllm_in_podman_mounts_the_hub_and_runs_offline_once_cached(
    orch_env: OrchEnv, tmp_path: Path
) -> None:
    hub = tmp_path / "hub"
    orch_env.env["HF_HUB_CACHE"] = str(hub)
    orch_env.write_profile("vp", VLLM_PODMAN)

    def podman_args() -> list[str]:
        argv = plan_json(orch_env, "--dry-run", "vp")["argv"]
        assert isinstance(argv, list)
        return argv[: argv.index("docker.io/vllm/vllm-openai:latest") + 2]

    # not cached: writable hub (vLLM downloads into it), online
    args = podman_args()
    assert args[args.index("-v") + 1] == f"{hub}:/hf/hub:z"
    assert "HF_HOME=/hf" in args and "HF_HUB_OFFLINE=1" not in args
    assert args[-1] == "org/llm"  # the image's entrypoint is `vllm serve`: no "serve" here

    make_cache(hub, "org/llm", MAIN, {"config.json": b"{}", "model.safetensors": b"w"}, ("main",))
    args = podman_args()
    assert args[args.index("-v") + 1] == f"{hub}:/hf/hub:ro,z"
    assert "HF_HOME=/hf" in args and "HF_HUB_OFFLINE=1" in args


# ---------------------------------------------------------------- a real container


def test_real_container_serves_weights_from_the_cache(
    orch_env: OrchEnv, hub: Path, podman_image: str
) -> None:
    """The real llama-server image loads a split GGUF through the snapshot's links."""
    port = free_port()
    hf_profile(orch_env, "hfr", runtime=f'kind = "podman"\nimage = "{podman_image}"', port=port)
    orch_env.env["HF_HUB_CACHE"] = str(hub)
    up = orch_env.run("up", "hfr", timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"hfr: ready at http://127.0.0.1:{port}" in up.stdout
        env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
        inspect = subprocess.run(
            ["podman", "inspect", "orch-hfr", "--format", "{{json .Mounts}}"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        mounts = json.loads(inspect.stdout)
        assert [(m["Source"], m["Destination"]) for m in mounts] == [
            (str(hub / repo_folder(REPO_ID)), "/models")
        ]
        logs = orch_env.run("logs", "hfr", "-n", "400")
        assert f"/models/snapshots/{MAIN}/{FILE}" in logs.stdout
        assert "warm-up 1: TTFT" in up.stdout  # both parts loaded through the links: it answers
    finally:
        down = orch_env.run("down", "hfr", "--grace", "5")
    assert down.returncode == 0, down.stderr


def test_weights_dataclass_is_plain_data() -> None:
    """The plan takes HfWeights as data: equal values, equal plans."""
    a = HfWeights(REPO_ID, "main", FILE, "/hub", MAIN, (FILE,), ())
    assert a == HfWeights(REPO_ID, "main", FILE, "/hub", MAIN, (FILE,), ())
    assert a.cached and a.path == f"/hub/{repo_folder(REPO_ID)}/snapshots/{MAIN}/{FILE}"
