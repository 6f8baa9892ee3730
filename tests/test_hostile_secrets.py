"""Class 2: secrets. One definition (orchestrator.secrecy), refused in profiles, redacted in output.

Every planted value below contains PLANTED; no output orch writes may contain it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.flagcatalogue import load_catalogue
from orchestrator.secrecy import SECRET_FLAGS, is_secret_name, redact_argv
from tests.conftest import OrchEnv, free_port
from tests.hostile import GOOD, PODMAN, VLLM, Case, Cli, add, bad, cli, ids

__all__ = ["cli"]

SECRET = "PLANTED-s3cr3t-0123"
ADVICE = (
    "keep secrets out of profiles and command lines: the API key comes from "
    "secrets.api_key_env or secrets.api_key_file; pass any other secret through by name with "
    'secrets.pass_env = ["{name}"] and set it in orch\'s environment'
)


def env_case(name: str, base: str, var: str) -> Case:
    return bad(
        name,
        add("runtime", f'env = {{ {var} = "{SECRET}" }}', base),
        f"runtime.env.{var}: the name says it holds a secret, which would be written into "
        f"command lines and plans; {ADVICE.format(name=var)}",
    )


def flag_message(i: int, flag: str) -> str:
    return (
        f"engine.extra_args[{i}]: {flag} would put a secret in the command line "
        "(use secrets.api_key_env or secrets.api_key_file)"
    )


CASES = [
    bad("-hft", add("engine", f'extra_args = ["-hft", "{SECRET}"]'), flag_message(0, "-hft")),
    bad(
        "--hf-token=",
        add("engine", f'extra_args = ["--jinja", "--hf-token={SECRET}"]'),
        flag_message(1, "--hf-token"),
    ),
    bad(
        "--api-key",
        add("engine", f'extra_args = ["--api-key", "{SECRET}"]'),
        flag_message(0, "--api-key"),
    ),
    bad(
        "vllm --api_key",
        add("engine", f'extra_args = ["--api_key", "{SECRET}"]', VLLM),
        flag_message(0, "--api-key"),
    ),
    bad(
        "vllm --hf-token",
        add("engine", f'extra_args = ["--hf-token", "{SECRET}"]', VLLM),
        flag_message(0, "--hf-token"),
    ),
    bad(
        "--api-key-file in extra_args",
        add("engine", 'extra_args = ["--api-key-file", "/etc/keys"]'),
        "engine.extra_args[0]: --api-key-file bypasses orch's key-file checks; use "
        "secrets.api_key_file, which orch checks and mounts",
    ),
    bad(
        "extra_args as one string",
        add("engine", f'extra_args = "--api-key {SECRET}"'),
        "engine.extra_args: expected a list, got <redacted>",
    ),
    env_case("LLAMA_API_KEY in env", GOOD, "LLAMA_API_KEY"),
    env_case("OPENAI_API_KEY in podman env", PODMAN, "OPENAI_API_KEY"),
    env_case("HF_TOKEN in env", GOOD, "HF_TOKEN"),
    env_case("MY_PASSWD in env", GOOD, "MY_PASSWD"),
    env_case("lower-case token in env", GOOD, "hf_token"),
    env_case("AWS secret in env", GOOD, "AWS_SECRET_ACCESS_KEY"),
    env_case("MYSQL_PWD in env", GOOD, "MYSQL_PWD"),
    bad(
        "secret env of the wrong type",
        add("runtime", "env = { HF_TOKEN = 123456789 }"),
        "runtime.env.HF_TOKEN: expected a string, got <redacted>",
    ),
    bad(
        "podman -e NAME=VALUE",
        add("runtime", f'extra_args = ["-e", "HF_TOKEN={SECRET}"]', PODMAN),
        f"runtime.extra_args[0]: -e HF_TOKEN=... puts a secret in the command line; "
        f"{ADVICE.format(name='HF_TOKEN')}",
    ),
    bad(
        "podman --env=NAME=VALUE",
        add("runtime", f'extra_args = ["--env=GITHUB_TOKEN={SECRET}"]', PODMAN),
        f"runtime.extra_args[0]: --env GITHUB_TOKEN=... puts a secret in the command line; "
        f"{ADVICE.format(name='GITHUB_TOKEN')}",
    ),
    bad(
        "podman -eNAME=VALUE",
        add("runtime", f'extra_args = ["-eHF_TOKEN={SECRET}"]', PODMAN),
        f"runtime.extra_args[0]: -e HF_TOKEN=... puts a secret in the command line; "
        f"{ADVICE.format(name='HF_TOKEN')}",
    ),
    bad(
        "podman -de NAME=VALUE",
        add("runtime", f'extra_args = ["-de", "DB_PASSWORD={SECRET}"]', PODMAN),
        f"runtime.extra_args[0]: -e DB_PASSWORD=... puts a secret in the command line; "
        f"{ADVICE.format(name='DB_PASSWORD')}",
    ),
    bad(
        "podman --env-host",
        add("runtime", 'extra_args = ["--env-host"]', PODMAN),
        "runtime.extra_args[0]: --env-host is orch's to set (the container's name, labels and "
        "environment)",
    ),
    bad(
        "empty api_key_env",
        GOOD + '\n[secrets]\napi_key_env = ""\n',
        "secrets.api_key_env: empty, which is not 'no authentication': name the key's source, "
        "or remove the key to run without authentication",
    ),
    bad(
        "empty api_key_file",
        GOOD + '\n[secrets]\napi_key_file = ""\n',
        "secrets.api_key_file: empty, which is not 'no authentication': name the key's source, "
        "or remove the key to run without authentication",
    ),
    bad(
        "the key itself in api_key_env",
        GOOD + f'\n[secrets]\napi_key_env = "{SECRET}"\n',
        "secrets.api_key_env: not an environment variable name (letters, digits and _, not "
        "starting with a digit); name the variable, not its value",
    ),
    bad(
        "the key in api_key_env, wrong type",
        GOOD + "\n[secrets]\napi_key_env = 1234567\n",
        "secrets.api_key_env: expected a string, got <redacted>",
    ),
    bad(
        "pass_env with a bad name",
        GOOD + '\n[secrets]\npass_env = ["HF TOKEN"]\n',
        "secrets.pass_env[0]: not an environment variable name (letters, digits and _, not "
        "starting with a digit); name the variable, not its value",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_secret_in_profile_is_refused_unseen(cli: Cli, case: Case) -> None:
    result = cli.check(case)
    assert SECRET not in result.out + result.err
    as_json = cli.run("plan", "--dry-run", "--json", "bad")
    assert as_json.code == case.code and SECRET not in as_json.out + as_json.err
    validate = cli.run("validate")
    assert validate.code == 2 and SECRET not in validate.out + validate.err


NAMES = [
    ("HF_TOKEN", True),
    ("HUGGING_FACE_HUB_TOKEN", True),
    ("OPENAI_API_KEY", True),
    ("LLAMA_API_KEY", True),
    ("VLLM_API_KEY", True),
    ("MY_PASSWD", True),
    ("DB_PASSWORD", True),
    ("MYSQL_PWD", True),
    ("SMTP_PASS", True),
    ("AWS_SECRET_ACCESS_KEY", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("GPG_PASSPHRASE", True),
    ("apikey", True),
    ("hf_token", True),
    ("PATH", False),
    ("PWD", False),
    ("HOME", False),
    ("TOKENIZERS_PARALLELISM", False),
    ("CUDA_VISIBLE_DEVICES", False),
    ("OMP_NUM_THREADS", False),
    ("PASSAGE_COUNT", False),
]


@pytest.mark.parametrize(("name", "secret"), NAMES)
def test_which_names_hold_secrets(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redaction_covers_every_spelling() -> None:
    argv = ["srv", "--api-key", "a1", "--api-key=a2", "-hft", "a3", "--hf-token=a4", "--api_key"]
    argv += ["a5", "-e", "HF_TOKEN=a6", "--env=MY_PASSWD=a7", "-e", "OMP_NUM_THREADS=8"]
    argv += ["-eOPENAI_API_KEY=a8", "-de", "HF_TOKEN=a9", "--override-tensor", "token_embd=CPU"]
    assert redact_argv(argv) == [
        "srv", "--api-key", "<redacted>", "--api-key=<redacted>", "-hft", "<redacted>",
        "--hf-token=<redacted>", "--api_key", "<redacted>", "-e", "HF_TOKEN=<redacted>",
        "--env=MY_PASSWD=<redacted>", "-e", "OMP_NUM_THREADS=8", "-eOPENAI_API_KEY=<redacted>",
        "-de", "HF_TOKEN=<redacted>", "--override-tensor", "token_embd=CPU",
    ]  # fmt: skip


def test_pass_env_goes_by_name_only(cli: Cli) -> None:
    cli.write(
        {"models/p.toml": PODMAN + '\n[secrets]\npass_env = ["HF_TOKEN"]\napi_key_env = "K1"\n'}
    )
    env = {"HF_TOKEN": SECRET, "K1": SECRET + "-key"}
    text = cli.run("plan", "--dry-run", "p", env=env)
    as_json = cli.run("plan", "--dry-run", "--json", "p", env=env)
    assert text.code == as_json.code == 0
    argv = json.loads(as_json.out)["argv"]
    assert argv[argv.index("HF_TOKEN") - 1] == "-e"
    assert argv[argv.index("LLAMA_API_KEY") - 1] == "-e"
    assert SECRET not in text.out + text.err + as_json.out + as_json.err


def test_planted_secrets_reach_the_engine_and_nothing_else(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    """``up``: the engine gets both secrets in its environment; no output or file has them."""
    token, key = SECRET + "-token", SECRET + "-key"
    orch_env.env.update({"HF_TOKEN": token, "ORCH_TEST_KEY": key})
    port = free_port()
    path = orch_env.llama_profile(
        "sec", model=tiny_gguf, binary=llama_server_binary, port=port, warmup=1
    )
    orch_env.write_profile(
        "sec",
        path.read_text() + '\n[secrets]\napi_key_env = "ORCH_TEST_KEY"\npass_env = ["HF_TOKEN"]\n',
    )
    outputs = [orch_env.run("plan", "sec"), orch_env.run("plan", "--json", "sec")]
    unit = orch_env.run("systemd", "sec", "--orch-path", "/usr/bin/true")
    assert unit.returncode == 0, unit.stderr
    assert "EnvironmentFile=" in unit.stdout and "HF_TOKEN=..." in unit.stdout
    up = orch_env.run("up", "sec")
    assert up.returncode == 0, up.stdout + up.stderr
    record = orch_env.record("sec") or {}
    pid = int(str(record["pid"]))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"HF_TOKEN={token}".encode() in environ
    assert f"LLAMA_API_KEY={key}".encode() in environ
    outputs += [orch_env.run("status", "sec"), orch_env.run("logs", "sec"), up, unit]
    outputs.append(orch_env.run("down", "sec"))
    for done in outputs:
        assert SECRET not in done.stdout + done.stderr, done.args
    files = [p for p in orch_env.state.rglob("*") if p.is_file()]
    assert files  # the engine log and the record were written
    for file in files:
        assert SECRET.encode() not in file.read_bytes(), file


@pytest.mark.parametrize("kind", ["llama.cpp", "ik_llama.cpp", "vllm"])
def test_catalogued_key_and_token_flags_are_secrets(kind: str) -> None:
    """A regenerated flag catalogue cannot bring a key or token flag secrecy.py misses."""
    catalogue = load_catalogue(kind)
    for group in catalogue.groups:
        names = [f for f in group if re.search(r"-(key|token|secret|password|passwd)$", f)]
        if names or any(f in SECRET_FLAGS for f in group):
            assert set(group) <= SECRET_FLAGS, (kind, group)
