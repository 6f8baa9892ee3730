"""Preflight's flag check for podman: the image's own `--help`, run once per image ID, cached."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import instances
from orchestrator.errors import PreflightError
from orchestrator.runtime import podman as podman_rt
from orchestrator.settings import Settings
from tests.conftest import CONTAINERS_CONF, OrchEnv, free_port

ENTRYPOINT = "/usr/local/bin/llama-server"


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=60)


def _containers(name: str) -> list[str]:
    out = _podman("ps", "-a", "--filter", f"label=orch.profile={name}", "--format", "{{.Names}}")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def _image_id(image: str) -> str:
    out = _podman("image", "inspect", "--format", "{{.Id}}", image)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _started_since(since: float) -> list[str]:
    """Names of containers podman started from ``since`` (Unix seconds) until now."""
    out = _podman(
        "events",
        "--stream=false",
        "--since",
        str(int(since)),
        "--until",
        str(int(time.time()) + 1),
        "--filter",
        "event=start",
        "--format",
        "{{.Name}}",
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _profile(
    orch: OrchEnv,
    name: str,
    image: str,
    model: Path,
    *,
    kind_lines: str = "",
    extra_args: tuple[str, ...] = (),
) -> None:
    """A podman llama.cpp profile; ``kind_lines`` replace the line ``kind = "llama.cpp"``."""
    orch.llama_profile(
        name,
        model=model,
        binary="llama-server",
        port=free_port(),
        runtime=f'kind = "podman"\nimage = "{image}"',
        warmup=0,
        extra_args=extra_args,
    )
    if kind_lines:
        path = orch.profiles / "models" / f"{name}.toml"
        path.write_text(path.read_text().replace('kind = "llama.cpp"\n', kind_lines, 1))


# An ik_llama.cpp profile pointed at an image holding mainline llama.cpp: `-no-fmoe` is in the
# ik_llama.cpp catalogue (so the profile validates) but not in this binary's --help.
IK_ON_MAINLINE = ('kind = "ik_llama.cpp"\n', ("-no-fmoe",), "-no-fmoe")
# engine.version names an old build (before --load-mode), so the plan renders --mlock,
# which the image's newer build no longer has.
OLD_VERSION = ('kind = "llama.cpp"\nversion = "b5000"\nload_mode = "mlock"\n', (), "--mlock")


@pytest.mark.parametrize(
    ("kind_lines", "extra_args", "flag"),
    [IK_ON_MAINLINE, OLD_VERSION],
    ids=["ik-extra-flag-on-mainline-image", "old-version-flag"],
)
def test_unsupported_flag_refused_then_cached(
    orch_env: OrchEnv,
    podman_image: str,
    tiny_gguf: Path,
    kind_lines: str,
    extra_args: tuple[str, ...],
    flag: str,
) -> None:
    _profile(orch_env, "pf", podman_image, tiny_gguf, kind_lines=kind_lines, extra_args=extra_args)
    cache_dir = orch_env.state / "cache" / "engine-flags"
    image_id = _image_id(podman_image)
    cache_file = cache_dir / f"{image_id}.json"

    start = time.monotonic()
    first = orch_env.run("up", "pf")
    first_s = time.monotonic() - start
    assert first.returncode == 4, first.stdout + first.stderr
    expected = (
        f"image {podman_image} ({ENTRYPOINT}) does not support {flag} (per its --help); "
        "check engine.version and runtime.image"
    )
    assert expected in first.stderr
    assert "Traceback" not in first.stderr
    assert _containers("pf") == []
    assert orch_env.record("pf") is None

    # The flag set is cached under the state dir, keyed by the image ID.
    assert [p.name for p in cache_dir.iterdir()] == [cache_file.name]
    cached = json.loads(cache_file.read_text())
    assert cached["image_id"] == image_id
    assert cached["entrypoint"] == [ENTRYPOINT]
    assert "--ctx-size" in cached["flags"] and flag not in cached["flags"]
    stamp = cache_file.stat().st_mtime_ns

    start = time.monotonic()
    second = orch_env.run("up", "pf")
    second_s = time.monotonic() - start
    assert second.returncode == 4 and expected in second.stderr, second.stderr
    assert cache_file.stat().st_mtime_ns == stamp, "the cache was rewritten"
    assert _containers("pf") == []
    print(
        f"\n[measured] refused `orch up` (whole CLI): first {first_s:.2f} s "
        f"(podman run --help), second {second_s:.2f} s (cached)"
    )

    # Proof that preflight reads the cache, not a fresh --help: a cached set without
    # --ctx-size (in neither of its spellings) refuses a profile that this binary supports.
    cached["flags"].remove("--ctx-size")
    cached["flags"].remove("-c")
    cache_file.write_text(json.dumps(cached))
    _profile(orch_env, "pg", podman_image, tiny_gguf)
    doctored = orch_env.run("up", "pg")
    assert doctored.returncode == 4, doctored.stdout + doctored.stderr
    assert f"image {podman_image} ({ENTRYPOINT}) does not support --ctx-size" in doctored.stderr
    assert _containers("pg") == []


def test_supported_profile_passes_and_later_ups_use_the_cache(
    orch_env: OrchEnv, podman_image: str, tiny_gguf: Path
) -> None:
    _profile(orch_env, "pg", podman_image, tiny_gguf)
    image_id = _image_id(podman_image)
    up = orch_env.run("up", "pg")
    assert up.returncode == 0, up.stdout + up.stderr
    note = f"note: engine flags read from {podman_image} in "
    assert note in up.stdout
    assert f"(podman run --help), cached for image {image_id[:12]}" in up.stdout
    assert "flag check skipped" not in up.stdout
    assert _containers("pg") == ["orch-pg"]
    assert (orch_env.state / "cache" / "engine-flags" / f"{image_id}.json").is_file()
    assert orch_env.run("down", "pg").returncode == 0

    again = orch_env.run("up", "pg")
    assert again.returncode == 0, again.stdout + again.stderr
    assert note not in again.stdout  # cached: no --help container this time
    assert orch_env.run("down", "pg").returncode == 0
    assert _containers("pg") == []


def test_image_flags_one_container_per_image_id(podman_image: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    info = podman_rt.inspect_image(settings.podman_binary, podman_image)
    assert info is not None and info.entrypoint == (ENTRYPOINT,)
    probe_name = f"orch-flags-{info.id[:12]}-{os.getpid()}"

    since = time.time()
    start = time.perf_counter()
    flags, cached = instances.image_flags(settings, info)
    first_s = time.perf_counter() - start
    assert not cached
    assert {"--ctx-size", "--model", "--fim-qwen-1.5b-default"} <= flags
    assert "--fim-qwen-1" not in flags  # dots inside a flag name are part of it

    start = time.perf_counter()
    again, cached = instances.image_flags(settings, info)
    cached_s = time.perf_counter() - start
    assert cached and again == flags
    print(
        f"\n[measured] image flag set: first {first_s * 1000:.0f} ms "
        f"(podman run --rm --help), cached {cached_s * 1000:.2f} ms"
    )
    # Exactly one throwaway container started, for the first call only; none is left.
    # (podman's event log can lag the container's exit: wait for the event, then count.)
    deadline = time.monotonic() + 10
    started = _started_since(since)
    while probe_name not in started and time.monotonic() < deadline:
        time.sleep(0.2)
        started = _started_since(since)
    assert started.count(probe_name) == 1
    assert probe_name not in _podman("ps", "-a", "--format", "{{.Names}}").stdout
    assert instances.flag_cache_path(settings, info.id).is_file()


def test_missing_image_is_not_probed(orch_env: OrchEnv, tiny_gguf: Path) -> None:
    _profile(orch_env, "pm", "localhost/orch-no-such-image:0", tiny_gguf)
    up = orch_env.run("up", "pm")
    assert up.returncode == 4
    assert "image localhost/orch-no-such-image:0 is not present locally" in up.stderr
    assert not (orch_env.state / "cache").exists()


def test_failing_help_is_an_error_and_not_cached(podman_image: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    info = podman_rt.inspect_image(settings.podman_binary, podman_image)
    assert info is not None
    broken = podman_rt.ImageInfo(info.id, ("/usr/local/bin/no-such-engine",))
    with pytest.raises(PreflightError, match=r"no-such-engine --help in image \w{12} exited 127"):
        instances.image_flags(settings, broken)
    assert not instances.flag_cache_path(settings, info.id).exists()
    probe_name = f"orch-flags-{info.id[:12]}-{os.getpid()}"
    assert probe_name not in _podman("ps", "-a", "--format", "{{.Names}}").stdout


def test_help_that_exits_1_after_the_usage_is_accepted(tmp_path: Path) -> None:
    """ik_llama.cpp's llama-server prints its usage for --help, then exits 1.

    No ik_llama.cpp image can be built here, so a stand-in for `podman run` prints what such an
    entrypoint prints and exits as it does; a real error (no usage printed) is still refused.
    """
    ik_like = tmp_path / "podman-ik"
    ik_like.write_text(
        "#!/usr/bin/env python3\n"
        "print('usage: llama-server [options]')\n"
        "print('  -c N, --ctx-size N   size of the prompt context')\n"
        "print('  -fmoe, --fused-moe   fused MoE')\n"
        "raise SystemExit(1)\n"
    )
    failing = tmp_path / "podman-failing"
    failing.write_text(
        "#!/usr/bin/env python3\nimport sys\n"
        "print('Error: crun: executable file not found', file=sys.stderr)\n"
        "raise SystemExit(127)\n"
    )
    for script in (ik_like, failing):
        script.chmod(0o755)
    info = podman_rt.ImageInfo("sha256:" + "a" * 64, ("/app/llama-server",))
    text = podman_rt.engine_help(str(ik_like), info)
    assert "--fused-moe" in text
    settings = Settings(state_dir=tmp_path / "s", podman_binary=str(ik_like))
    flags, cached = instances.image_flags(settings, info)
    assert flags == {"-c", "--ctx-size", "-fmoe", "--fused-moe"} and not cached
    with pytest.raises(PreflightError, match="exited 127: Error: crun"):
        podman_rt.engine_help(str(failing), info)
