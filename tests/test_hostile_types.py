"""Class 8 (lax types, plans that disagree with the argv, errors in bases) and the profile and
argument inputs of class 7 that used to end in tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PROFILES
from tests.hostile import BAD, GOOD, PODMAN, Case, Cli, add, bad, cli, edit, ids

__all__ = ["cli"]

HW = "{root}/hardware/evil.toml"
HARDWARE = """\
[cpu]
model = "x"
physical_cores = 4
threads = 8

[memory]
ram_gib = 64
"""
TWO_GPUS = GOOD.replace("epyc9175f-rtxpro6000", "epyc9175f-2x-rtxpro6000")
DEEP = "[" * 5000 + "]" * 5000

CASES = [
    bad(
        "ctx = true", edit("ctx = 8192", "ctx = true"), "engine.ctx: expected an integer, got true"
    ),
    bad("ctx = 1.5", edit("ctx = 8192", "ctx = 1.5"), "engine.ctx: expected an integer, got 1.5"),
    bad(
        "ctx beyond int32",
        edit("ctx = 8192", "ctx = 4294967296"),
        "engine.ctx: must be <= 2147483647, got 4294967296",
    ),
    bad(
        'port = "8001"',
        edit("port = 8001", 'port = "8001"'),
        "publish.port: expected an integer, got '8001'",
    ),
    bad(
        'cpu_moe = "yes"',
        add("engine", 'cpu_moe = "yes"'),
        "engine.cpu_moe: expected true or false, got 'yes'",
    ),
    bad(
        "cpu_moe = 1",
        add("engine", "cpu_moe = 1"),
        "engine.cpu_moe: expected true or false, got 1",
    ),
    bad(
        "temp = inf",
        GOOD + "\n[engine.sampling]\ntemp = inf\n",
        "engine.sampling.temp: expected a finite number, got inf",
    ),
    bad(
        "top_p = nan",
        GOOD + "\n[engine.sampling]\ntop_p = nan\n",
        "engine.sampling.top_p: expected a finite number, got nan",
    ),
    bad(
        "seed above uint32",
        GOOD + "\n[engine.sampling]\nseed = 9223372036854775807\n",
        "engine.sampling.seed: must be <= 4294967295, got 9223372036854775807",
    ),
    bad(
        "seed below -1",
        GOOD + "\n[engine.sampling]\nseed = -2\n",
        "engine.sampling.seed: must be >= -1, got -2",
    ),
    bad(
        "cache_ram_mib = -5",
        add("engine", "cache_ram_mib = -5"),
        "engine.cache_ram_mib: must be >= -1, got -5",
    ),
    bad(
        "tensor_split all zero",
        add("engine", "tensor_split = [0, 0]", TWO_GPUS),
        "engine.tensor_split: every part is 0",
    ),
    bad(
        "tensor_split inf",
        add("engine", "tensor_split = [1, inf]", TWO_GPUS),
        "engine.tensor_split[1]: expected a finite number, got inf",
    ),
    bad("gpus = [0, 0]", "gpus = [0, 0]\n" + GOOD, "gpus: GPU 0 is listed twice"),
    bad(
        "gpus = [] with gpu_layers = 99",
        "gpus = []\n" + add("engine", "gpu_layers = 99"),
        "engine.gpu_layers: 99 layers offloaded, but this profile has no GPU (gpus = []); set "
        "gpu_layers = 0 or give it a GPU",
    ),
    bad(
        "-ot CUDA0 with gpus = []",
        "gpus = []\n"
        + GOOD
        + '\n[[engine.override_tensors]]\npattern = "exps"\ndevice = "CUDA0"\n',
        "engine.override_tensors[0].device: CUDA0 is not available to this profile (gpus = []); "
        "the plan could not count what it holds",
    ),
    bad(
        "-ot CUDA0 in a container with no GPU",
        PODMAN + '\n[[engine.override_tensors]]\npattern = "exps"\ndevice = "CUDA0"\n',
        "engine.override_tensors[0].device: CUDA0 is not available to this profile (the "
        "container gets no GPU device: runtime.devices); the plan could not count what it holds",
    ),
    bad(
        "-ot CUDA1 outside gpus",
        "gpus = [0]\n" + TWO_GPUS + '\n[[engine.override_tensors]]\npattern = "exps"\n'
        'device = "CUDA1"\n',
        "engine.override_tensors[0].device: CUDA1 is not available to this profile (gpus = "
        "[0]); the plan could not count what it holds",
    ),
    bad(
        "gpu_layers on hardware without a GPU",
        add("engine", "gpu_layers = 99").replace("epyc9175f-rtxpro6000", "small-cpu"),
        "engine.gpu_layers: 99 layers offloaded, but this profile has no GPU (hardware "
        "'small-cpu' has none); set gpu_layers = 0 or give it a GPU",
    ),
    bad(
        "main_gpu outside gpus",
        "gpus = [1]\n" + add("engine", "main_gpu = 0", TWO_GPUS),
        "engine.main_gpu: GPU 0 is not available (gpus = [1])",
    ),
    bad(
        "warm-up requests absurd",
        GOOD + "\n[warmup]\nrequests = 1000000\n",
        "warmup.requests: must be <= 1000, got 1000000",
    ),
    bad(
        "health timeout inf",
        GOOD + "\n[health]\ntimeout_s = inf\n",
        "health.timeout_s: expected a finite number, got inf",
    ),
    bad(
        "health timeout huge",
        GOOD + "\n[health]\ntimeout_s = 1e308\n",
        "health.timeout_s: must be <= 604800, got 1e+308",
    ),
    bad(
        "a date",
        add("engine", "ctx = 1979-05-27").replace("ctx = 8192\n", "", 1),
        "engine.ctx: expected an integer, got datetime.date(1979, 5, 27)",
    ),
    bad(
        "did you mean threads",
        add("engine", "thread = 4"),
        "engine.thread: unknown key; did you mean threads? (valid: kind, version, binary, ctx, "
        "batch, ubatch, threads, threads_batch, gpu_layers, split_mode, tensor_split, main_gpu, "
        "override_tensors, cpu_moe, n_cpu_moe, cache_type_k, cache_type_v, flash_attn, "
        "load_mode, parallel, kv_unified, jinja, grouped_expert_routing, metrics, "
        "cache_ram_mib, sampling, placement, extra_args)",
    ),
    bad(
        "did you mean port",
        edit("port = 8001", "port = 8001\nprot = 1"),
        "publish.prot: unknown key; did you mean port? (valid: host, port)",
    ),
    bad(
        "did you mean a hardware profile",
        edit('hardware = "epyc9175f-rtxpro6000"', 'hardware = "epyc9175f-rtxpro600"'),
        "hardware: no hardware profile 'epyc9175f-rtxpro600'; did you mean "
        "epyc9175f-rtxpro6000? (available: epyc9175f-2x-rtxpro6000, epyc9175f-rtxpro6000, "
        "h100-sxm-80gb, small-cpu)",
    ),
    bad("deeply nested array", f"x = {DEEP}\n" + GOOD, "nested deeper than 16 levels"),
    bad(
        "deeply nested tables",
        GOOD + "\n[" + ".".join(f"t{i}" for i in range(40)) + "]\nx = 1\n",
        "t0.t1.t2.t3.t4.t5.t6.t7.t8.t9.t10.t11.t12.t13.t14.t15: nested deeper than 16 levels",
    ),
    bad(
        "not UTF-8",
        b'description = "\xff\xfe"\n' + GOOD.encode(),
        "not UTF-8 text: byte 0xff at offset 15",
    ),  # fmt: skip
    Case(
        "hardware ram_gib = inf",
        {
            "hardware/evil.toml": HARDWARE.replace("64", "inf"),
            "models/bad.toml": edit("epyc9175f-rtxpro6000", "evil"),
        },
        2,
        f"{HW}: memory.ram_gib: expected a finite number, got inf",
    ),
    Case(
        "hardware vram as text",
        {
            "hardware/evil.toml": HARDWARE
            + '\n[[gpus]]\nindex = 0\nname = "x"\nvram_mib = "96GB"\n',
            "models/bad.toml": edit("epyc9175f-rtxpro6000", "evil"),
        },
        2,
        f"{HW}: gpus[0].vram_mib: expected an integer, got '96GB'",
    ),
    Case(
        "hardware not UTF-8",
        {
            "hardware/evil.toml": b"\x80" + HARDWARE.encode(),
            "models/bad.toml": edit("epyc9175f-rtxpro6000", "evil"),
        },
        2,
        f"{HW}: not UTF-8 text: byte 0x80 at offset 0",
    ),
    Case(
        "an error in a base names the base",
        {
            "models/_base.toml": GOOD.replace("ctx = 8192", "ctx = true"),
            "models/bad.toml": 'extends = "_base"\ndescription = "child"\n',
        },
        2,
        "{root}/models/_base.toml: engine.ctx: expected an integer, got true",
    ),
    Case(
        "an unknown key in a base names the base",
        {
            "models/_base.toml": add("publish", "prot = 1"),
            "models/bad.toml": 'extends = "_base"\n[engine]\nctx = 4096\n',
        },
        2,
        "{root}/models/_base.toml: publish.prot: unknown key; did you mean port? (valid: "
        "host, port)",
    ),
    Case(
        "a bad reference in a base names the base",
        {
            "models/_base.toml": edit('architecture = "qwen3-coder-next"', 'architecture = "x"'),
            "models/bad.toml": 'extends = "_base"\n',
        },
        2,
        "{root}/models/_base.toml: architecture: no architecture profile 'x' (available: "
        "iquest-coder-v1-40b, llama4-scout-17b-16e, qwen3-coder-next, qwen35-397b-a17b, "
        "synthetic-tiny-dense)",
    ),
    Case(
        "a device error from a base names the base",
        {
            "models/_base.toml": "gpus = []\n" + add("engine", "gpu_layers = 10"),
            "models/bad.toml": 'extends = "_base"\ndescription = "child"\n',
        },
        2,
        "{root}/models/_base.toml: engine.gpu_layers: 10 layers offloaded, but this profile "
        "has no GPU (gpus = []); set gpu_layers = 0 or give it a GPU",
    ),
    Case(
        "the child's own mistake names the child",
        {
            "models/_base.toml": GOOD,
            "models/bad.toml": 'extends = "_base"\n[engine]\nctx = "big"\n',
        },
        2,
        f"{BAD}: engine.ctx: expected an integer, got 'big'",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_lax_input_is_an_error(cli: Cli, case: Case) -> None:
    cli.check(case)


ESTIMATE = [
    (("-ngl", "abc"), "--n-gpu-layers: expected an integer, got 'abc'"),
    (("-c", "1e9"), "--ctx-size: expected an integer, got '1e9'"),
    (("-c", "99999999999"), "--ctx-size: 99999999999 is out of range (0..2147483647)"),
    (("-ub", "0"), "--ubatch-size: 0 is out of range (1..2147483647)"),
    (("--n-cpu-moe", "-1"), "--n-cpu-moe: -1 is out of range (0..2147483647)"),
    (("-ts", "1,inf"), "--tensor-split: 'inf' is not a finite number >= 0"),
    (("-ts", "a,b"), "--tensor-split: expected numbers, got 'a'"),
    (("-ot", "x[=CPU"), "--override-tensor 'x[': missing ']' (at position 1)"),
    (
        ("-ot", "(?i)EXPS=CPU"),
        "--override-tensor '(?i)EXPS': inline flags such as (?i) are Python syntax; the "
        "engine's regex has no flags (tensor names are lower case) (at position 0)",
    ),
    (("-ot", "exps"), "--override-tensor 'exps': expected PATTERN=DEVICE"),
    (
        ("-ot", "exps=CUDA0"),
        "--override-tensor 'exps=CUDA0': 'CUDA0' is not a device here (valid: CPU; pass "
        "--hardware to plan GPUs)",
    ),
    (("-c",), "-c needs a value"),
    (("--turbo",), "--turbo is not a llama.cpp llama-server flag"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from orchestrator.synthetic import TINY_DENSE, write_gguf

    return write_gguf(TINY_DENSE, tmp_path_factory.mktemp("types") / "tiny.gguf")


@pytest.mark.parametrize(("args", "message"), ESTIMATE, ids=[" ".join(a) for a, _ in ESTIMATE])
def test_estimate_arguments(cli: Cli, tiny: Path, args: tuple[str, ...], message: str) -> None:
    result = cli.run("estimate", str(tiny), "--", *args)
    assert (result.code, result.err) == (2, f"orch: error: {message}\n")


def test_estimate_ot_on_a_gpu_of_the_hardware(cli: Cli, tiny: Path) -> None:
    argv = ("--hardware", "epyc9175f-rtxpro6000", "--json", "--", "-ngl", "99")
    result = cli.run("estimate", str(tiny), *argv, "-ot", "ffn=CUDA0")
    assert result.code == 0, result.err
    assert set(json.loads(result.out)["devices"]) == {"CUDA0", "CPU"}


def test_no_gpu_renders_device_none(cli: Cli) -> None:
    cli.write({"models/p.toml": "gpus = []\n" + add("engine", "gpu_layers = 0")})
    result = cli.run("plan", "--dry-run", "--json", "p")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    argv = data["argv"]
    assert argv[argv.index("--device") + 1] == "none"
    assert [b["device"] for b in data["budget"]] == ["CPU"]


@pytest.mark.parametrize(
    ("engine", "device", "env"),
    [("llama.cpp", "none", {}), ("ik_llama.cpp", None, {"CUDA_VISIBLE_DEVICES": ""})],
)
def test_no_gpu_is_each_engines_own_way(
    cli: Cli, engine: str, device: str | None, env: dict[str, str]
) -> None:
    # gpus = [] keeps the engine off every GPU the adapter's way (ik's --device takes no none),
    # whatever gpu_layers says (unset: llama-server's default offload)
    profile = edit('kind = "llama.cpp"', f'kind = "{engine}"', "gpus = []\n" + GOOD)
    cli.write({"models/p.toml": profile})
    result = cli.run("plan", "--dry-run", "--json", "p")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    argv = data["argv"]
    assert (argv[argv.index("--device") + 1] if "--device" in argv else None) == device
    assert data["env"] == env
    assert [b["device"] for b in data["budget"]] == ["CPU"]


def test_validate_reports_profiles_after_an_unreadable_one(cli: Cli) -> None:
    cli.write(
        {
            "models/aaa.toml": b"\xff" + GOOD.encode(),
            "models/zzz.toml": "[" * 100 + "\n",
            "models/mmm.toml": edit("ctx = 8192", "ctx = true"),
        }
    )
    result = cli.run("validate")
    assert result.code == 2
    lines = result.out.splitlines()
    root = cli.profiles / "models"
    assert f"error  {root}/aaa.toml: not UTF-8 text: byte 0xff at offset 0" in lines
    assert f"error  {root}/mmm.toml: engine.ctx: expected an integer, got true" in lines
    assert any(line.startswith(f"error  {root}/zzz.toml: TOML syntax error") for line in lines)
    assert "ok     models/demo" in lines
    shipped = len(list((PROFILES / "models").glob("[!_]*.toml")))
    assert lines[-1] == f"{shipped + 3} model profile(s), 3 error(s)"
