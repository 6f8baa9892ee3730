"""Flag catalogues come from the engines, and every flag an engine takes is taken by orch.

The shipped catalogues are regenerated from the real engines (upstream's and ik's llama-server
built here; vLLM's parser in tests/test_vllm_args.py) and must come out unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.engines import LLAMA_SERVERS, ArgsError, adapter_for_kind
from orchestrator.flagcatalogue import Flag, FlagCatalogue, load_catalogue
from orchestrator.flagsources import (
    help_entries,
    ik_llama_cpp_flags,
    ik_parser_flags,
    llama_cpp_flags,
    split_negation,
)
from orchestrator.plan import build_plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from tests.conftest import PROFILES, REPO, TEMPLATES

SCRIPT = REPO / "scripts" / "flag-catalogue.py"


def regenerate(engine: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), engine, "--check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_upstream_catalogue_regenerates_unchanged(llama_server_binary: Path) -> None:
    done = regenerate("llama.cpp", "--binary", str(llama_server_binary))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_ik_catalogue_regenerates_unchanged(ik_llama: Path) -> None:
    done = regenerate("ik_llama.cpp", "--binary", str(ik_llama / "llama-server"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


# ---------------------------------------------------------------- reading help and source

HELP = """\
----- common params -----

-h,    --help, --usage                  print usage and exit
-c,    --ctx-size N                     size of the prompt context (default: 0, 0 = loaded from model)
                                        (env: LLAMA_ARG_CTX_SIZE)
-kvu,  --kv-unified, -no-kvu, --no-kv-unified
                                        use single unified KV buffer shared across all sequences
--repack, -nr, --no-repack              whether to enable weight repacking (default: enabled)
-ot,   --override-tensor <tensor name pattern>=<buffer type>,...
                                        override tensor buffer type
--control-vector-layer-range START END  layer range to apply the control vector(s) to
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM
--fit [on|off]                          whether to adjust unset arguments to fit in device memory
"""


def test_upstream_help_becomes_alias_groups_with_values() -> None:
    lines = llama_cpp_flags(HELP).render().splitlines()
    assert lines == [
        "--control-vector-layer-range START END",
        "--ctx-size -c N",
        "--fit VALUE",
        "--gpu-layers -ngl --n-gpu-layers N",
        "--help -h --usage",
        "--kv-unified -kvu",
        "--no-kv-unified -no-kvu",
        "--no-repack -nr",
        "--override-tensor -ot VALUE",
        "--repack",
    ]


@pytest.mark.parametrize(
    ("spellings", "groups"),
    [
        (
            ["-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified"],
            [("-kvu", "--kv-unified"), ("-no-kvu", "--no-kv-unified")],
        ),
        (["--repack", "-nr", "--no-repack"], [("--repack",), ("-nr", "--no-repack")]),
        (
            ["-kvo", "--kv-offload", "-nkvo", "--no-kv-offload"],
            [("-kvo", "--kv-offload"), ("-nkvo", "--no-kv-offload")],
        ),
        (
            ["--mmproj-auto", "--no-mmproj", "--no-mmproj-auto"],
            [("--mmproj-auto",), ("--no-mmproj", "--no-mmproj-auto")],
        ),
        (["-nr", "--no-repack"], [("-nr", "--no-repack")]),
        (["--no-webui"], [("--no-webui",)]),
    ],
)
def test_a_switch_and_its_negation_are_two_flags(
    spellings: list[str], groups: list[tuple[str, ...]]
) -> None:
    assert split_negation(spellings) == groups


IK_SOURCE = """\
bool gpt_params_find_arg(int argc, char ** argv, const std::string & arg, gpt_params & params, int & i, bool & invalid_param) {
    if (arg == "-ngl" || arg == "--gpu-layers" || arg == "--n-gpu-layers") {
        CHECK_ARG
        params.n_gpu_layers = std::stoi(argv[i]);
        if (!llama_supports_gpu_offload()) {
            fprintf(stderr, "warning: not compiled with GPU offload support\\n");
        }
        return true;
    }
    if (arg == "--override-tensor" || arg == "-ot") {
        CHECK_ARG
        return true;
    }
    if (arg == "--lora-scaled") {
        CHECK_ARG
        std::string lora_adapter = argv[i];
        CHECK_ARG
        return true;
    }
    if (arg == "-ger" || arg == "--grouped-expert-routing") {
        params.grouped_expert_routing = true;
        return true;
    }
    return false;
}

void gpt_params_print_usage(int /*argc*/, char ** argv, const gpt_params & params) {
    options.push_back({ "*",           "-ger,  --grouped-expert-routing", "enable grouped expert routing" });
    if (llama_supports_gpu_offload()) {
        options.push_back({ "*",           "-ngl,  --gpu-layers N",
                                                                        "number of layers to store in VRAM" });
    }
    options.push_back({ "*",           "       --lora-scaled FNAME S",  "path to LoRA adapter with scaling S" });
    options.push_back({ "cvector",     "-o,    --output FNAME",         "output file" });
}
"""

IK_CPU_HELP = """\
usage: llama-server [options]

general:

  -ger,  --grouped-expert-routing  enable grouped expert routing
         --lora-scaled FNAME S     path to LoRA adapter with scaling S
  -o,    --output FNAME            output file
"""


def test_ik_parser_is_read_from_its_source() -> None:
    parsed = ik_parser_flags(IK_SOURCE)
    assert [(p.spellings, p.values) for p in parsed] == [
        (("-ngl", "--gpu-layers", "--n-gpu-layers"), 1),
        (("--override-tensor", "-ot"), 1),
        (("--lora-scaled",), 2),
        (("-ger", "--grouped-expert-routing"), 0),
    ]


def test_ik_catalogue_keeps_what_a_cpu_help_omits() -> None:
    flags, unparsed = ik_llama_cpp_flags(IK_CPU_HELP, IK_SOURCE)
    assert flags.render().splitlines() == [
        "--gpu-layers -ngl --n-gpu-layers N (hidden)",  # spelled as the GPU help spells it
        "--grouped-expert-routing -ger",
        "--lora-scaled FNAME S",
        "--override-tensor -ot VALUE (hidden)",  # parsed, in no help at all
    ]
    assert [e.spellings for e in unparsed] == [("-o", "--output")]  # another program's option


def test_ik_help_entries_are_indented() -> None:
    entries = help_entries(IK_CPU_HELP, indent=2)
    assert [(e.spellings, e.hint) for e in entries] == [
        (("-ger", "--grouped-expert-routing"), ""),
        (("--lora-scaled",), "FNAME S"),
        (("-o", "--output"), "FNAME"),
    ]


# ---------------------------------------------------------------- the shipped catalogues


@pytest.mark.parametrize("engine", ["llama.cpp", "ik_llama.cpp", "vllm"])
def test_shipped_catalogue_is_well_formed(engine: str) -> None:
    text = (REPO / "orchestrator" / "data" / f"flags-{engine}.txt").read_text(encoding="utf-8")
    assert "-----" not in text
    catalogue = FlagCatalogue.parse(text)
    assert FlagCatalogue.parse(catalogue.render()) == catalogue
    spellings = [s for flag in catalogue.flags for s in flag.spellings]
    assert len(spellings) == len(set(spellings)), "a spelling in two flags"
    for flag in catalogue.flags:
        longs = [s for s in flag.spellings if s.startswith("--")]
        assert not longs or flag.canonical == longs[0], flag


@pytest.mark.parametrize(
    ("engine", "spellings", "values"),
    [
        ("llama.cpp", ("--ctx-size", "-c"), 1),
        ("llama.cpp", ("--fit", "-fit"), 1),
        ("llama.cpp", ("--load-mode", "-lm"), 1),
        ("llama.cpp", ("--alias", "-a"), 1),
        ("llama.cpp", ("--verbose", "-v", "--log-verbose"), 0),
        ("llama.cpp", ("--gpu-layers", "-ngl", "--n-gpu-layers"), 1),
        ("ik_llama.cpp", ("--gpu-layers", "-ngl", "--n-gpu-layers"), 1),
        ("ik_llama.cpp", ("--override-tensor", "-ot"), 1),
        ("ik_llama.cpp", ("--grouped-expert-routing", "-ger"), 0),
        ("ik_llama.cpp", ("--cpu-moe", "-cmoe"), 0),
        ("vllm", ("--tensor-parallel-size", "-tp"), 1),
        ("vllm", ("--disable-prefix-caching", "--no-enable-prefix-caching"), 0),
    ],
)
def test_one_flag_all_its_spellings(engine: str, spellings: tuple[str, ...], values: int) -> None:
    catalogue = load_catalogue(engine)
    flag = catalogue.get(spellings[0])
    assert flag is not None and set(spellings) <= set(flag.spellings)
    assert flag.canonical == spellings[0]
    assert {catalogue.canonical(s) for s in spellings} == {spellings[0]}
    assert catalogue.value_count(spellings[-1]) == values


# ---------------------------------------------------------------- the live check


def test_live_check_is_alias_aware() -> None:
    adapter = adapter_for_kind("ik_llama.cpp")
    cpu_help = {"-ger", "--grouped-expert-routing", "-c", "--ctx-size", "--jinja"}
    flags = ["--gpu-layers", "-ngl", "--override-tensor", "-ger", "--ctx-size", "--made-up"]
    # -ngl and -ot: hidden (the parser takes them, a CPU build's --help lists neither)
    assert adapter.unconfirmed_flags(flags, cpu_help) == ["--made-up"]
    upstream = adapter_for_kind("llama.cpp")
    # the help lists -ngl: any spelling of that flag is confirmed
    assert upstream.unconfirmed_flags(["--n-gpu-layers", "--gpu-layers"], {"-ngl"}) == []
    assert upstream.unconfirmed_flags(["--mlock"], {"--load-mode", "-lm"}) == ["--mlock"]


# ---------------------------------------------------------------- orch estimate and extra_args


def _value(spelling: str, flag: Flag) -> list[str]:
    """A value orch can interpret for the flags it reads, any word for the rest."""
    known = {
        "--cache-type-k": "q8_0",
        "--cache-type-v": "q8_0",
        "--override-tensor": "exps=CPU",
        "--tensor-split": "1",
        "--load-mode": "none",
        "--flash-attn": "on",
        "--split-mode": "layer",
        "--gpu-layers": "0",
        "--device": "none",  # no GPU here: the only device list that names none
    }
    first = known.get(flag.canonical, "1")
    return [first, *(["1"] * (len(flag.values) - 1))]


@pytest.mark.parametrize("engine", sorted(LLAMA_SERVERS))
def test_estimate_parser_takes_every_long_spelling(engine: str) -> None:
    adapter = LLAMA_SERVERS[engine]
    for flag in adapter.catalogue.flags:
        for spelling in flag.spellings:
            if not spelling.startswith("--"):
                continue
            args = [spelling, *_value(spelling, flag)] if flag.values else [spelling]
            try:
                adapter.parse_args(
                    [*args, "--ctx-size", "512"],
                    gpus=(),
                    gpu_vram_mib=(),
                    cuda_context_mib=0,
                    moe_layers=[],
                )
            except ArgsError as exc:
                pytest.fail(f"{engine}: {' '.join(args)} refused: {exc}")


@pytest.mark.parametrize(
    "args",
    [
        ["--ctx-size", "4096"],
        ["--fit", "off", "-c", "4096"],
        ["--load-mode", "none", "-c", "4096"],
        ["--load-mode", "mmap+mlock", "-c", "4096"],
        ["--verbose", "-c", "4096"],
        ["--n-gpu-layers", "0", "--gpu-layers", "0", "-ngl", "0", "-c", "4096"],
        ["--ctx_size", "4096"],
    ],
    ids=" ".join,
)
def test_estimate_accepts(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["estimate", str(tiny_gguf), "--json", "--", *args]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("engine", "args", "message"),
    [
        ("llama.cpp", ["--made-up", "1"], "--made-up is not a llama.cpp llama-server flag"),
        ("llama.cpp", ["-ger"], "-ger is not a llama.cpp llama-server flag"),
        ("llama.cpp", ["--ctx-size"], "--ctx-size needs a value"),
        ("llama.cpp", ["-c", "big"], "--ctx-size: expected an integer, got 'big'"),
        ("llama.cpp", ["--verbose=1"], "--verbose takes no value"),
        (
            "ik_llama.cpp",
            ["--load-mode", "none"],
            "--load-mode is not a ik_llama.cpp llama-server flag",
        ),
    ],
)
def test_estimate_refuses(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], engine: str, args: list[str], message: str
) -> None:
    assert main(["estimate", str(tiny_gguf), "--engine", engine, "--", *args]) == 2
    assert f"orch: error: {message}" in capsys.readouterr().err


def test_estimate_ik_engine_takes_ik_flags(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "-c",
        "4096",
        "-ger",
        "--no-mmap",
        "--cpu-moe",
        "-ot",
        "exps=CPU",
        "-b",
        "2048",
        "-ub",
        "2048",
    ]
    assert (
        main(["estimate", str(tiny_gguf), "--engine", "ik_llama.cpp", "--json", "--", *args]) == 0
    )


def test_extra_args_take_any_catalogued_flag(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root)
    demo = root / "models" / "demo.toml"
    demo.write_text(
        demo.read_text().replace(
            "[engine]\n", '[engine]\nextra_args = ["--verbose", "--fit", "off"]\n'
        )
    )
    plan = build_plan(Catalog(root).load("demo"), make_environment(TEMPLATES))
    assert plan.engine_argv[-3:] == ("--verbose", "--fit", "off")


# ---------------------------------------------------------------- ik profiles against the real ik

IK_PROFILES = [
    name
    for name in Catalog(PROFILES).model_names()
    if Catalog(PROFILES).load(name).profile.engine.kind == "ik_llama.cpp"
]


def test_there_are_ik_profiles() -> None:
    assert len(IK_PROFILES) >= 5


@pytest.mark.parametrize("name", IK_PROFILES)
def test_ik_help_check_refuses_no_ik_profile_flag(ik_llama: Path, name: str) -> None:
    """`orch up`'s flag check against ik's real --help (a CPU build: no -ngl, no -ot listed)."""
    from orchestrator.instances import supported_flags

    plan = build_plan(Catalog(PROFILES).load(name), make_environment(TEMPLATES))
    supported = supported_flags(str(ik_llama / "llama-server"))
    assert "--gpu-layers" not in supported and "--override-tensor" not in supported
    assert adapter_for_kind("ik_llama.cpp").unconfirmed_flags(plan.engine_flags, supported) == []


@pytest.mark.parametrize("name", IK_PROFILES)
def test_ik_parser_takes_every_ik_profile_flag(ik_llama: Path, name: str, tmp_path: Path) -> None:
    """ik's own parser reads the whole argv; only loading the (absent) model fails.

    -ot values name CUDA devices this CPU build lacks (it refuses them as values, after
    taking the flag), so they become CPU here: the flags are what is checked.
    """
    plan = build_plan(Catalog(PROFILES).load(name), make_environment(TEMPLATES))
    argv = [a.replace("=CUDA0", "=CPU").replace("=CUDA1", "=CPU") for a in plan.engine_argv]
    argv[argv.index("--model") + 1] = "/nonexistent/orch-test.gguf"
    argv[argv.index("--port") + 1] = "1"  # never bound: the model load fails first
    done = subprocess.run(
        [str(ik_llama / "llama-server"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # ik writes llama.log into its working directory
    )
    output = done.stdout + done.stderr
    assert "unknown argument" not in output and "invalid parameter" not in output, output[-2000:]
    assert "failed to load model '/nonexistent/orch-test.gguf'" in output, output[-2000:]
