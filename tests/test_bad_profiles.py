"""Table-driven bad inputs: each must give one exact, file-and-key-naming message and exit 2."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import OrchError
from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
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


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def add(section: str, line: str) -> str:
    return edit(f"[{section}]\n", f"[{section}]\n{line}\n")


CASES: list[tuple[str, str, str]] = [
    (
        "toml syntax",
        'architecture = "x\n',
        "TOML syntax error: Illegal character '\\n' (at line 1, column 18)",
    ),
    (
        "unknown top-level key",
        "colour = 1\n" + GOOD,
        "colour: unknown key (valid: description, architecture, hardware, model, engine, runtime, publish, numactl, needs_whole_gpu, gpus, health, warmup, secrets)",
    ),
    (
        "unknown engine key",
        add("engine", "ctx_size = 4"),
        "engine.ctx_size: unknown key (valid: kind, version, binary, ctx, batch, ubatch, threads, threads_batch, gpu_layers, split_mode, tensor_split, main_gpu, override_tensors, cpu_moe, n_cpu_moe, cache_type_k, cache_type_v, flash_attn, load_mode, parallel, kv_unified, jinja, grouped_expert_routing, metrics, cache_ram_mib, sampling, placement, extra_args)",
    ),
    (
        "bad cache type",
        add("engine", 'cache_type_k = "q9_0"'),
        "engine.cache_type_k: 'q9_0' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1",
    ),
    (
        "bad engine kind",
        edit('kind = "llama.cpp"', 'kind = "llamafile"'),
        "engine.kind: 'llamafile' is not one of llama.cpp, ik_llama.cpp, vllm",
    ),
    (
        "missing engine kind",
        edit('kind = "llama.cpp"\n', ""),
        "engine.kind: missing (valid: llama.cpp, ik_llama.cpp, vllm)",
    ),
    (
        "bad runtime kind",
        edit('kind = "process"', 'kind = "docker"'),
        "runtime.kind: 'docker' is not one of podman, process",
    ),
    ("missing ctx", edit("ctx = 8192\n", ""), "engine.ctx: missing"),
    ("negative ctx", edit("ctx = 8192", "ctx = -1"), "engine.ctx: must be > 0, got -1"),
    (
        "ctx wrong type",
        edit("ctx = 8192", 'ctx = "big"'),
        "engine.ctx: expected an integer, got 'big'",
    ),
    (
        "port out of range",
        edit("port = 8001", "port = 70000"),
        "publish.port: must be <= 65535, got 70000",
    ),
    (
        "flash_attn value",
        add("engine", 'flash_attn = "yes"'),
        "engine.flash_attn: 'yes' is not one of on, off, auto",
    ),
    (
        "load mode value",
        add("engine", 'load_mode = "lock"'),
        "engine.load_mode: 'lock' is not one of mmap, no-mmap, mlock",
    ),
    (
        "ubatch over batch",
        add("engine", "ubatch = 4096\nbatch = 2048"),
        "engine.ubatch: 4096 is larger than batch 2048",
    ),
    (
        "cpu_moe and n_cpu_moe",
        add("engine", "cpu_moe = true\nn_cpu_moe = 3"),
        "engine.cpu_moe: set cpu_moe or n_cpu_moe, not both",
    ),
    (
        "ot regex does not compile",
        GOOD + '\n[[engine.override_tensors]]\npattern = "blk\\\\.(0|1"\ndevice = "CPU"\n',
        "engine.override_tensors[0].pattern: 'blk\\\\.(0|1': missing ')' (at position 5)",
    ),
    (
        "ot bad device",
        GOOD + '\n[[engine.override_tensors]]\npattern = "exps"\ndevice = "GPU0"\n',
        "engine.override_tensors[0].device: 'GPU0' is not a device (valid: CPU, CUDA0, CUDA1, ...)",
    ),
    (
        "ot GPU absent from hardware",
        GOOD + '\n[[engine.override_tensors]]\npattern = "exps"\ndevice = "CUDA1"\n',
        "engine.override_tensors[0].device: CUDA1 is not a GPU of hardware 'epyc9175f-rtxpro6000' (it has CUDA0)",
    ),
    (
        "gpus index absent",
        "gpus = [0, 2]\n" + GOOD,
        "gpus: GPU 2 is not in hardware 'epyc9175f-rtxpro6000' (CUDA0)",
    ),
    (
        "numa node absent",
        GOOD + "\n[numactl]\ncpunodebind = [1]\n",
        "numactl.cpunodebind: NUMA node 1 is not in hardware 'epyc9175f-rtxpro6000' (nodes: 0)",
    ),
    (
        "missing hardware reference",
        edit('hardware = "epyc9175f-rtxpro6000"', 'hardware = "epyc9999"'),
        "hardware: no hardware profile 'epyc9999' (available: epyc9175f-2x-rtxpro6000, epyc9175f-rtxpro6000, h100-sxm-80gb, small-cpu)",
    ),
    (
        "missing architecture reference",
        edit('architecture = "qwen3-coder-next"', 'architecture = "qwen4"'),
        "architecture: no architecture profile 'qwen4' (available: iquest-coder-v1-40b, llama4-scout-17b-16e, qwen3-coder-next, qwen35-397b-a17b, synthetic-tiny-dense)",
    ),
    (
        "model not gguf",
        edit('path = "/models/q.gguf"', 'path = "/models/q.bin"'),
        "model.path: '/models/q.bin' is not a .gguf file",
    ),
    (
        "unknown quant recipe",
        edit('quant = "IQ4_NL"', 'quant = "Q3_XL"'),
        "model.quant: 'Q3_XL' is not one of F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, IQ4_NL, IQ4_XS, NVFP4, IQ4_KSS",
    ),
    (
        "unknown tensor type override",
        add("model", 'tensor_types = { ffn_exps = "q3_z" }'),
        "model.tensor_types.ffn_exps: unknown ggml type 'q3_z'",
    ),
    (
        "-ger on upstream",
        add("engine", "grouped_expert_routing = true"),
        "engine.grouped_expert_routing: -ger is ik_llama.cpp only (engine is llama.cpp)",
    ),
    (
        "unknown flag in extra_args",
        add("engine", 'extra_args = ["--turbo"]'),
        "engine.extra_args[0]: --turbo is not a llama.cpp server flag",
    ),
    (
        "api key in extra_args",
        add("engine", 'extra_args = ["--api-key", "s3cret"]'),
        "engine.extra_args[0]: --api-key would put a secret in the command line (use secrets.api_key_env or secrets.api_key_file)",
    ),
    (
        "api key variable on ik_llama.cpp",
        edit('kind = "llama.cpp"', 'kind = "ik_llama.cpp"') + '\n[secrets]\napi_key_env = "K"\n',
        "secrets.api_key_env: ik_llama.cpp reads no API-key variable, so the server would start without authentication; use secrets.api_key_file",
    ),
    (
        "two secret sources",
        GOOD + '\n[secrets]\napi_key_env = "K"\napi_key_file = "/k"\n',
        "secrets.api_key_env: set api_key_env or api_key_file, not both",
    ),
    (
        "vllm parser missing",
        GOOD.replace('path = "/models/q.gguf"', 'hf_repo = "org/m"').replace(
            'kind = "llama.cpp"\nctx = 8192',
            'kind = "vllm"\nmax_model_len = 8192\nenable_auto_tool_choice = true',
        ),
        "engine.enable_auto_tool_choice: needs tool_call_parser",
    ),
    (
        "vllm tp over gpus",
        GOOD.replace('path = "/models/q.gguf"', 'hf_repo = "org/m"').replace(
            'kind = "llama.cpp"\nctx = 8192',
            'kind = "vllm"\nmax_model_len = 8192\ntensor_parallel_size = 2',
        ),
        "engine.tensor_parallel_size: 2 but hardware 'epyc9175f-rtxpro6000' has 1 GPU(s)",
    ),
    (
        "n_cpu_moe on dense",
        edit('architecture = "qwen3-coder-next"', 'architecture = "iquest-coder-v1-40b"').replace(
            "ctx = 8192", "ctx = 8192\nn_cpu_moe = 4"
        ),
        "engine.n_cpu_moe: the architecture has no experts",
    ),
    ("extends cycle", 'extends = "bad"\n' + GOOD, "extends: cycle bad -> bad"),
    (
        "shm size",
        edit('kind = "process"', 'kind = "podman"\nimage = "x"\nshm_size = "16 gigs"'),
        "runtime.shm_size: '16 gigs' is not a size like 16g",
    ),
    (
        "volume relative",
        edit('kind = "process"', 'kind = "podman"\nimage = "x"\nvolumes = ["data:/data"]'),
        "runtime.volumes: 'data:/data' is not HOST:CONTAINER[:OPTIONS] with absolute paths",
    ),
    (
        "podman key on process runtime",
        add("runtime", 'image = "x"'),
        "runtime.image: unknown key (valid: kind, env)",
    ),
    (
        "auto placement with manual -ngl",
        add("engine", 'placement = "auto"\ngpu_layers = 20\ncpu_moe = true'),
        'engine.placement: "auto" chooses gpu_layers, cpu_moe, n_cpu_moe, override_tensors, tensor_split; remove gpu_layers, cpu_moe or set placement = "manual"',
    ),
    (
        "unknown placement",
        add("engine", 'placement = "fastest"'),
        "engine.placement: 'fastest' is not one of manual, auto",
    ),
    (
        "path and hf_repo",
        add("model", 'hf_repo = "org/m-GGUF"\nhf_file = "m.gguf"'),
        "model.path: set path or hf_repo, not both",
    ),
    (
        "hf_file without hf_repo",
        add("model", 'hf_file = "m.gguf"'),
        "model.hf_file: needs hf_repo",
    ),
    (
        "hf_repo not an id",
        edit('path = "/models/q.gguf"', 'hf_repo = "https://hf.co/org/m"\nhf_file = "m.gguf"'),
        "model.hf_repo: 'https://hf.co/org/m' is not a Hugging Face repo id like ORG/NAME",
    ),
    (
        "hf_file escapes the repo",
        edit('path = "/models/q.gguf"', 'hf_repo = "org/m"\nhf_file = "../m.gguf"'),
        "model.hf_file: '../m.gguf' is not a file path inside the repo like DIR/NAME.gguf",
    ),
    (
        "hf_repo without hf_file on llama.cpp",
        edit('path = "/models/q.gguf"', 'hf_repo = "org/m-GGUF"'),
        "model.hf_file: llama.cpp engines need the GGUF in hf_repo",
    ),
    (
        "hf_file not gguf",
        edit('path = "/models/q.gguf"', 'hf_repo = "org/m"\nhf_file = "model.safetensors"'),
        "model.hf_file: 'model.safetensors' is not a .gguf file",
    ),
    (
        "revision with spaces",
        edit(
            'path = "/models/q.gguf"',
            'hf_repo = "org/m"\nhf_file = "m.gguf"\nrevision = "my branch"',
        ),
        "model.revision: 'my branch' is not a branch, tag or commit hash",
    ),
    (
        "mount_root with hf_repo",
        edit('path = "/models/q.gguf"', 'hf_repo = "org/m"\nhf_file = "m.gguf"\nmount_root = "/x"'),
        "model.mount_root: orch mounts the hf_repo's cache folder itself",
    ),
    (
        "hf_file on vllm",
        GOOD.replace('path = "/models/q.gguf"', 'hf_repo = "org/m"\nhf_file = "m.gguf"').replace(
            'kind = "llama.cpp"\nctx = 8192', 'kind = "vllm"\nmax_model_len = 8192'
        ),
        "model.hf_file: vllm loads the whole hf_repo; remove hf_file",
    ),
    (
        "hf_home relative",
        edit('kind = "process"', 'kind = "podman"\nimage = "x"\nhf_home = "hf"'),
        "runtime.hf_home: 'hf' is not an absolute container path",
    ),
    (
        "sampling top_p range",
        GOOD + "\n[engine.sampling]\ntop_p = 1.5\n",
        "engine.sampling.top_p: must be <= 1, got 1.5",
    ),
]


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    return root


def load_error(profiles_dir: Path, text: str) -> str:
    (profiles_dir / "models" / "bad.toml").write_text(text, encoding="utf-8")
    with pytest.raises(OrchError) as info:
        resolved = Catalog(profiles_dir).load("bad")
        build_plan(resolved, make_environment(TEMPLATES))
    return str(info.value)


@pytest.mark.parametrize(("name", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_profile_message(profiles_dir: Path, name: str, content: str, expected: str) -> None:
    source = str(profiles_dir / "models" / "bad.toml")
    assert load_error(profiles_dir, content) == f"{source}: {expected}"


def test_table_has_enough_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) >= 25
    assert len({c[2] for c in CASES}) == len(CASES)


def test_cli_exit_code_and_no_traceback(
    profiles_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (profiles_dir / "models" / "bad.toml").write_text(add("engine", 'cache_type_k = "q9_0"'))
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(profiles_dir))
    code = main(["plan", "--dry-run", "bad"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "bad.toml: engine.cache_type_k: 'q9_0' is not one of" in err


def test_validate_reports_every_bad_profile(
    profiles_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (profiles_dir / "models" / "bad.toml").write_text(edit("ctx = 8192", "ctx = 0"))
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(profiles_dir))
    assert main(["validate"]) == 2
    out = capsys.readouterr().out
    assert "engine.ctx: must be > 0, got 0" in out
    assert "ok     models/demo" in out


def test_unknown_profile_lists_available(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--dry-run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no profile 'nope' (available: demo, iquest-coder-40b-nvfp4" in err


def test_dedent_helper_is_exact() -> None:
    assert textwrap.dedent(GOOD) == GOOD
