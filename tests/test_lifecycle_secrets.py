"""`[secrets]` end to end: the real llama-server demands the key, orch uses it, nobody sees it.

The key reaches the engine as an environment variable (``api_key_env`` → ``LLAMA_API_KEY``)
or as a file the engine reads (``api_key_file`` → ``--api-key-file PATH``), never as a value
on a command line: not the engine's, not podman's, not in ``orch plan``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from orchestrator.health import request
from tests.conftest import OrchEnv, free_port
from tests.test_lifecycle_podman import _podman, _runtime
from tests.test_lifecycle_process import _engines_on, _nothing_left

KEY_ENV = "ORCH_TEST_API_KEY"
CONTAINER_SECRET = "/run/secrets/orch-api-key"


def _new_key() -> str:
    return f"orch-test-{secrets.token_hex(16)}"


def _profile(
    orch: OrchEnv,
    name: str,
    secrets_toml: str,
    *,
    binary: Path | str,
    model: Path,
    port: int,
    runtime: str = 'kind = "process"',
) -> None:
    path = orch.llama_profile(name, model=model, binary=binary, port=port, runtime=runtime)
    orch.write_profile(name, path.read_text() + "\n[secrets]\n" + secrets_toml)


def _status(port: int, path: str, key: str | None = None) -> int:
    code, _ = request(f"http://127.0.0.1:{port}", path, api_key=key)
    return code


def _check_engine_demands(port: int, key: str) -> None:
    """A request without the key, or with another, is refused; with it, it is served."""
    assert _status(port, "/health") == 200  # public, as orch's readiness probe needs
    assert _status(port, "/v1/models") == 401
    assert _status(port, "/v1/models", "not-the-key") == 401
    assert _status(port, "/metrics") == 401
    assert _status(port, "/v1/models", key) == 200


def _check_orch_uses_key(orch: OrchEnv, name: str, up: subprocess.CompletedProcess[str]) -> None:
    """Warm-up (chat completions), status (/metrics, /slots) and bench all got through."""
    assert up.returncode == 0, up.stdout + up.stderr
    assert "warm-up 2: TTFT" in up.stdout
    status = orch.run("status", name, "--json")
    assert status.returncode == 0, status.stderr
    figures = json.loads(status.stdout)[0]["figures"]
    assert figures["tokens_predicted_total"] >= 16 and figures["slots_total"] == 1
    bench = orch.run("bench", name, "--runs", "1", "--prompt-tokens", "32", "--json")
    assert bench.returncode == 0, bench.stdout + bench.stderr


def _check_plan_hides(orch: OrchEnv, name: str, key: str) -> list[str]:
    """``orch plan`` (text and JSON) never shows the key; returns the JSON argv."""
    text = orch.run("plan", name)
    assert key not in text.stdout + text.stderr
    as_json = orch.run("plan", "--json", name)
    assert key not in as_json.stdout + as_json.stderr
    argv: list[str] = json.loads(as_json.stdout)["argv"]
    return argv


def _check_nowhere_on_disk(orch: OrchEnv, key: str) -> None:
    for path in orch.state.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the key is in {path}"


def _cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


# ---------------------------------------------------------------- process runtime


def test_api_key_from_env(orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path) -> None:
    key = _new_key()
    orch_env.env[KEY_ENV] = key
    port = free_port()
    _profile(
        orch_env,
        "s",
        f'api_key_env = "{KEY_ENV}"\n',
        binary=llama_server_binary,
        model=tiny_gguf,
        port=port,
    )
    argv = _check_plan_hides(orch_env, "s", key)
    assert "--api-key" not in argv and "--api-key-file" not in argv
    up = orch_env.run("up", "s")
    _check_orch_uses_key(orch_env, "s", up)
    assert key not in up.stdout + up.stderr
    pid = int(str((orch_env.record("s") or {})["pid"]))
    assert not any(key.encode() in arg for arg in _cmdline(pid))
    assert f"LLAMA_API_KEY={key}".encode() in _environ(pid)  # how it reached the engine
    _check_engine_demands(port, key)
    assert orch_env.run("down", "s").returncode == 0
    _nothing_left(orch_env, "s", pid)
    _check_nowhere_on_disk(orch_env, key)  # record and engine log


def test_api_key_from_file(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    key = _new_key()
    key_file = tmp_path / "api-key"
    # llama-server takes every line but blank and # ones; orch's requests send the first.
    key_file.write_text(f"# orch test key\n\n{key}\n{_new_key()}\n")
    key_file.chmod(0o600)
    port = free_port()
    _profile(
        orch_env,
        "s",
        f'api_key_file = "{key_file}"\n',
        binary=llama_server_binary,
        model=tiny_gguf,
        port=port,
    )
    argv = _check_plan_hides(orch_env, "s", key)
    assert argv[argv.index("--api-key-file") + 1] == str(key_file)
    up = orch_env.run("up", "s")
    _check_orch_uses_key(orch_env, "s", up)
    assert key not in up.stdout + up.stderr
    pid = int(str((orch_env.record("s") or {})["pid"]))
    cmdline = _cmdline(pid)
    assert str(key_file).encode() in cmdline
    assert not any(key.encode() in arg for arg in cmdline)
    assert not any(key.encode() in var for var in _environ(pid))
    _check_engine_demands(port, key)
    assert orch_env.run("down", "s").returncode == 0
    _nothing_left(orch_env, "s", pid)
    _check_nowhere_on_disk(orch_env, key)  # record and engine log


def test_unusable_key_is_a_preflight_error(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    port = free_port()
    no_key = tmp_path / "no-key"
    no_key.write_text("# the key goes here\n\n")
    crlf = tmp_path / "crlf-key"
    crlf.write_bytes(b"k-123\r\n")
    cases = [
        (f'api_key_env = "{KEY_ENV}"\n', None, f"secrets.api_key_env: ${KEY_ENV} is not set"),
        (
            f'api_key_env = "{KEY_ENV}"\n',
            "",
            f"secrets.api_key_env: ${KEY_ENV} is empty (the engine would start without "
            "authentication)",
        ),
        (
            f'api_key_file = "{tmp_path / "missing"}"\n',
            None,
            f"secrets.api_key_file: {tmp_path / 'missing'} does not exist",
        ),
        (
            f'api_key_file = "{no_key}"\n',
            None,
            f"secrets.api_key_file: {no_key} holds no key",
        ),
        (
            f'api_key_file = "{crlf}"\n',
            None,
            f"secrets.api_key_file: {crlf} has a line with leading or trailing whitespace",
        ),
        (
            f'api_key_file = "{tmp_path}"\n',
            None,
            f"secrets.api_key_file: cannot read {tmp_path}: Is a directory",
        ),
    ]
    for secrets_toml, env_value, message in cases:
        orch_env.env.pop(KEY_ENV, None)
        if env_value is not None:
            orch_env.env[KEY_ENV] = env_value
        _profile(
            orch_env, "s", secrets_toml, binary=llama_server_binary, model=tiny_gguf, port=port
        )
        up = orch_env.run("up", "s")
        assert up.returncode == 4, up.stdout + up.stderr
        assert "s: cannot start here:" in up.stderr and message in up.stderr
        assert "Traceback" not in up.stderr
        _nothing_left(orch_env, "s")
        assert not _engines_on(port)


# ---------------------------------------------------------------- podman runtime


def _inspect(container: str) -> dict[str, object]:
    done = _podman("container", "inspect", container)
    assert done.returncode == 0, done.stderr
    data: list[dict[str, object]] = json.loads(done.stdout)
    return data[0]


def test_api_key_from_env_in_podman(orch_env: OrchEnv, podman_image: str, tiny_gguf: Path) -> None:
    key = _new_key()
    orch_env.env[KEY_ENV] = key
    port = free_port()
    _profile(
        orch_env,
        "ps",
        f'api_key_env = "{KEY_ENV}"\n',
        binary="llama-server",
        model=tiny_gguf,
        port=port,
        runtime=_runtime(podman_image),
    )
    argv = _check_plan_hides(orch_env, "ps", key)
    # `podman run -e NAME` (no value): podman copies the value from its own environment.
    assert argv[argv.index("LLAMA_API_KEY") - 1] == "-e"
    assert not [a for a in argv if a.startswith("LLAMA_API_KEY=")]
    up = orch_env.run("up", "ps")
    _check_orch_uses_key(orch_env, "ps", up)
    assert key not in up.stdout + up.stderr
    _check_engine_demands(port, key)
    attrs = _inspect("orch-ps")
    config = attrs["Config"]
    assert isinstance(config, dict)
    assert key not in json.dumps([config.get("Cmd"), config.get("Entrypoint"), attrs["Args"]])
    # Known, and podman's doing: the value is kept in the container's config (inspect).
    assert f"LLAMA_API_KEY={key}" in config["Env"]
    down = orch_env.run("down", "ps")
    assert down.returncode == 0, down.stderr
    _check_nowhere_on_disk(orch_env, key)  # the saved container log included
    assert _podman("container", "exists", "orch-ps").returncode == 1
    assert orch_env.record("ps") is None


def test_api_key_file_mounted_in_podman(
    orch_env: OrchEnv, podman_image: str, tiny_gguf: Path, tmp_path: Path
) -> None:
    key = _new_key()
    key_file = tmp_path / "api-key"
    key_file.write_text(f"{key}\n")
    key_file.chmod(0o600)
    port = free_port()
    _profile(
        orch_env,
        "ps",
        f'api_key_file = "{key_file}"\n',
        binary="llama-server",
        model=tiny_gguf,
        port=port,
        runtime=_runtime(podman_image),
    )
    argv = _check_plan_hides(orch_env, "ps", key)
    assert f"{key_file}:{CONTAINER_SECRET}:ro,Z" in argv
    assert argv[argv.index("--api-key-file") + 1] == CONTAINER_SECRET
    up = orch_env.run("up", "ps")
    _check_orch_uses_key(orch_env, "ps", up)
    assert key not in up.stdout + up.stderr
    _check_engine_demands(port, key)
    assert key not in json.dumps(_inspect("orch-ps"))  # neither its command line nor its env
    down = orch_env.run("down", "ps")
    assert down.returncode == 0, down.stderr
    _check_nowhere_on_disk(orch_env, key)  # the saved container log included
    assert _podman("container", "exists", "orch-ps").returncode == 1
    assert orch_env.record("ps") is None


def test_ik_key_file_with_a_comment_is_refused(tmp_path: Path) -> None:
    """ik_llama.cpp takes every non-empty line of --api-key-file as a key, # lines included."""
    from orchestrator.instances import secret_problems
    from orchestrator.profiles.loader import Catalog
    from tests.conftest import PROFILES

    key_file = tmp_path / "key"
    key_file.write_text("# serving key\nk-123\n")
    for name, refused in (("qwen35-397b-iq4", True), ("qwen3-coder-next-bf16-cpu", False)):
        profile = Catalog(PROFILES).load(name).profile
        secrets = profile.secrets.model_copy(update={"api_key_file": str(key_file)})
        problems = secret_problems(profile.model_copy(update={"secrets": secrets}), {})
        assert bool(problems) is refused, (name, problems)
        if refused:
            assert "ik_llama.cpp accepts as a key" in problems[0]
