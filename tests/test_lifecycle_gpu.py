"""`needs_whole_gpu` and `orch up --skip-memory-check`, with real engines and no GPU.

There is no GPU here. The profiles declare GPU hardware, so their plans put the model on
CUDA0 (or CUDA1) and the records say which GPU each instance holds; `--skip-memory-check`
lets them start on this machine anyway, and says so. The CPU llama-server ignores
--n-gpu-layers and the fake vLLM ignores its GPU flags: what runs is real, what is tested is
orch's bookkeeping of who holds which GPU.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from orchestrator.health import probe
from tests.conftest import OrchEnv, free_port
from tests.test_lifecycle_process import (
    _engines_on,
    _fake_running,
    _nothing_left,
    _vllm_profile,
)

SKIP = "--skip-memory-check"


def _gpu_llama(
    orch: OrchEnv,
    name: str,
    *,
    binary: Path,
    model: Path,
    port: int,
    whole: bool,
    hardware: str = "epyc9175f-rtxpro6000",
    gpus: tuple[int, ...] | None = None,
    extra_args: tuple[str, ...] = (),
) -> None:
    """A llama-server profile offloading every layer to the GPU(s) of ``hardware``."""
    path = orch.llama_profile(
        name, model=model, binary=binary, port=port, warmup=1, extra_args=extra_args
    )
    text = path.read_text()
    text = text.replace('hardware = "small-cpu"', f'hardware = "{hardware}"')
    text = text.replace("gpu_layers = 0", "gpu_layers = 99")
    head = f"needs_whole_gpu = {'true' if whole else 'false'}\n"
    if gpus is not None:
        head += f"gpus = [{', '.join(map(str, gpus))}]\n"
    orch.write_profile(name, head + text)


def _vllm_whole(port: int) -> str:
    return "needs_whole_gpu = true\n" + _vllm_profile(port)


def _running(orch: OrchEnv, name: str) -> int:
    """The pid of a running instance (asserting that it runs and answers)."""
    status = orch.run("status", name, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    (data,) = json.loads(status.stdout)  # status NAME --json: a list of one, like status --json
    assert data["state"] == "running", data
    assert probe(data["endpoint"]) == 200
    return int(data["pid"])


def test_whole_gpu_holder_refuses_a_sharer_until_replace(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    _gpu_llama(
        orch_env, "big", binary=llama_server_binary, model=tiny_gguf, port=free_port(), whole=True
    )
    up = orch_env.run("up", "big", SKIP)
    assert up.returncode == 0, up.stdout + up.stderr
    record = orch_env.record("big")
    assert record is not None and record["gpus"] == [0] and record["needs_whole_gpu"] is True
    big = _running(orch_env, "big")

    vllm_port = free_port()
    orch_env.write_profile("v", _vllm_profile(vllm_port))  # shares GPU 0, does not need it whole
    refused = orch_env.run("up", "v", SKIP)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert (
        "v: cannot start on GPU 0: big holds it whole (needs_whole_gpu); "
        "stop it with `orch down big`, or pass --replace to stop it and start v"
    ) in refused.stderr
    assert orch_env.record("v") is None and not _fake_running(vllm_port)
    assert _running(orch_env, "big") == big  # the holder was left alone

    start = time.monotonic()
    replaced = orch_env.run("up", "v", "--replace", SKIP)
    took = time.monotonic() - start
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "v: stopping big (holds the GPU)" in replaced.stdout
    assert f"v: ready at http://127.0.0.1:{vllm_port}" in replaced.stdout
    print(f"\n[measured] up --replace (stop the GPU holder, start fake vLLM): {took:.2f} s")
    _nothing_left(orch_env, "big", big)
    v = _running(orch_env, "v")
    assert orch_env.run("down", "v").returncode == 0
    _nothing_left(orch_env, "v", v)


def test_profile_needing_whole_gpu_refuses_to_join_sharers(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    for name in ("a", "b"):
        _gpu_llama(
            orch_env,
            name,
            binary=llama_server_binary,
            model=tiny_gguf,
            port=free_port(),
            whole=False,
        )
        up = orch_env.run("up", name, SKIP)
        assert up.returncode == 0, up.stdout + up.stderr  # sharing a GPU is fine by default
    pids = {name: _running(orch_env, name) for name in ("a", "b")}

    vllm_port = free_port()
    orch_env.write_profile("w", _vllm_whole(vllm_port))
    refused = orch_env.run("up", "w", SKIP)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert (
        "w: cannot start on GPU 0: w needs the whole GPU (needs_whole_gpu) and it is in use "
        "by a, b; stop it with `orch down a b`"
    ) in refused.stderr
    assert orch_env.record("w") is None and not _fake_running(vllm_port)
    assert {name: _running(orch_env, name) for name in ("a", "b")} == pids

    replaced = orch_env.run("up", "w", "--replace", SKIP)
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "w: stopping a (holds the GPU)" in replaced.stdout
    assert "w: stopping b (holds the GPU)" in replaced.stdout
    for name, pid in pids.items():
        _nothing_left(orch_env, name, pid)
    w = _running(orch_env, "w")
    assert orch_env.run("down", "w").returncode == 0
    _nothing_left(orch_env, "w", w)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_whole_gpus_on_different_gpus_do_not_conflict(orch_env: OrchEnv) -> None:
    ports = {}
    for index in (0, 1):
        ports[index] = free_port()
        text = _vllm_whole(ports[index]).replace(
            'hardware = "epyc9175f-rtxpro6000"', 'hardware = "epyc9175f-2x-rtxpro6000"'
        )
        orch_env.write_profile(f"g{index}", f"gpus = [{index}]\n" + text)
        up = orch_env.run("up", f"g{index}", SKIP)
        assert up.returncode == 0, up.stdout + up.stderr
        assert (orch_env.record(f"g{index}") or {})["gpus"] == [index]
    pids = [_running(orch_env, name) for name in ("g0", "g1")]
    # each engine is restricted to its own GPU, not only orch's bookkeeping
    assert [_environ(pid).get("CUDA_VISIBLE_DEVICES") for pid in pids] == ["0", "1"]
    down = orch_env.run("down", "g0", "g1")
    assert down.returncode == 0, down.stderr
    for name, pid in zip(("g0", "g1"), pids, strict=True):
        _nothing_left(orch_env, name, pid)


def test_llama_server_is_told_its_gpu(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path
) -> None:
    _gpu_llama(
        orch_env,
        "g1",
        binary=llama_server_binary,
        model=tiny_gguf,
        port=free_port(),
        whole=True,
        hardware="epyc9175f-2x-rtxpro6000",
        gpus=(1,),
    )
    plan = orch_env.run("plan", "--dry-run", "--json", "g1")
    argv = json.loads(plan.stdout)["argv"]
    assert argv[argv.index("--device") + 1] == "CUDA1"
    # this CPU build has no CUDA1: the engine refuses it, and orch reports why
    up = orch_env.run("up", "g1", SKIP)
    assert up.returncode == 5, up.stdout + up.stderr
    assert "invalid device: CUDA1" in up.stderr
    _nothing_left(orch_env, "g1")


def test_skip_memory_check_says_so_and_still_checks_the_rest(
    orch_env: OrchEnv, llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    port = free_port()

    def profile(model: Path = tiny_gguf, ik_llama: bool = False) -> None:
        # CUDA0 is not here, and a 195 GiB prompt-cache limit needs more RAM than is free.
        extra = ("-no-fmoe",) if ik_llama else ()
        _gpu_llama(
            orch_env,
            "g",
            binary=llama_server_binary,
            model=model,
            port=port,
            whole=False,
            extra_args=extra,
        )
        text = (orch_env.profiles / "models" / "g.toml").read_text()
        if ik_llama:
            text = text.replace('"llama.cpp"', '"ik_llama.cpp"').replace("cache_ram_mib = 0\n", "")
        orch_env.write_profile("g", text.replace("cache_ram_mib = 0\n", "cache_ram_mib = 200000\n"))

    profile()
    refused = orch_env.run("up", "g")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "CUDA0: not present on this machine" in refused.stderr
    assert "CPU: needs 195." in refused.stderr and "GiB available now" in refused.stderr

    # The flag ignores free memory only: files, port and engine flags are still checked.
    profile(model=tmp_path / "missing.gguf")
    missing = orch_env.run("up", "g", SKIP)
    assert missing.returncode == 4 and "model file missing" in missing.stderr
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        profile()
        taken = orch_env.run("up", "g", SKIP)
    assert taken.returncode == 4 and f"port 127.0.0.1:{port} is already in use" in taken.stderr
    # -no-fmoe is an ik_llama.cpp flag; this llama.cpp binary's --help does not list it.
    profile(ik_llama=True)
    unsupported = orch_env.run("up", "g", SKIP)
    assert unsupported.returncode == 4, unsupported.stdout + unsupported.stderr
    assert "does not support -no-fmoe (per its --help)" in unsupported.stderr
    assert orch_env.record("g") is None
    assert not _engines_on(port)

    profile()
    up = orch_env.run("up", "g", SKIP, "--no-warmup")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "note: free RAM/VRAM check skipped (--skip-memory-check)" in up.stdout
    assert "note: ignored: CUDA0: not present on this machine" in up.stdout
    assert "note: ignored: CPU: needs 195." in up.stdout
    pid = _running(orch_env, "g")
    assert orch_env.run("down", "g").returncode == 0
    _nothing_left(orch_env, "g", pid)

    # When everything fits, the note still says the check was skipped, and ignores nothing.
    orch_env.llama_profile("c", model=tiny_gguf, binary=llama_server_binary, port=free_port())
    up = orch_env.run("up", "c", SKIP, "--no-warmup")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "note: free RAM/VRAM check skipped (--skip-memory-check)" in up.stdout
    assert "ignored:" not in up.stdout
    pid = _running(orch_env, "c")
    assert orch_env.run("down", "c").returncode == 0
    _nothing_left(orch_env, "c", pid)
    plain = orch_env.run("up", "c", "--no-warmup")
    assert plain.returncode == 0 and "check skipped" not in plain.stdout
    pid = _running(orch_env, "c")
    assert orch_env.run("down", "c").returncode == 0
    _nothing_left(orch_env, "c", pid)
