"""`orch bench` against the real CPU llama-server running the shipped demo profile."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator import __version__
from orchestrator.bench import ledger
from orchestrator.health import get_json
from tests.conftest import OrchEnv, free_port

SVG_NS = "{http://www.w3.org/2000/svg}"
VERDICTS = ("regression", "improvement", "no significant change", "too few runs")


def _demo_profile(orch: OrchEnv, model: Path, binary: Path, port: int) -> None:
    """The shipped demo profile, pointed at this test's model, binary and a free port."""
    path = orch.profiles / "models" / "demo.toml"
    text = path.read_text()
    edited = text.replace('path = "~/.cache/orch/models/tiny-dense.gguf"', f'path = "{model}"')
    edited = edited.replace('kind = "llama.cpp"', f'kind = "llama.cpp"\nbinary = "{binary}"')
    edited = re.sub(r"(?m)^port = \d+$", f"port = {port}", edited)
    assert edited.count(str(model)) == edited.count(str(binary)) == 1 and f"= {port}" in edited
    path.write_text(edited)


@pytest.fixture
def demo(orch_env: OrchEnv, tiny_gguf: Path, llama_server_binary: Path) -> Iterator[OrchEnv]:
    """The demo profile, up."""
    _demo_profile(orch_env, tiny_gguf, llama_server_binary, free_port())
    up = orch_env.run("up", "demo")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield orch_env
    finally:
        assert orch_env.run("down", "demo").returncode == 0


def _ledger(orch: OrchEnv) -> Path:
    return orch.state / "bench" / "demo" / ledger.LEDGER_FILE


def _bench_json(orch: OrchEnv, *args: str, name: str = "demo") -> dict[str, Any]:
    done = orch.run("bench", name, *args, "--json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_bench_demo_twice_then_history_and_compare(
    demo: OrchEnv, llama_server_binary: Path
) -> None:
    record = demo.record("demo")
    assert record is not None
    first = _bench_json(demo, "--runs", "4", "--max-tokens", "16")
    # seed 003's columns, measured by the engine itself
    runs = first["runs"]
    assert isinstance(runs, list) and len(runs) == 4
    limit = 2048 - 16 - 64  # demo ctx, one slot - generated - template margin
    assert first["planned"] == [512, limit, 1024, 512]
    for row, asked in zip(runs, first["planned"], strict=True):
        assert row["generated"] == 16 and row["source"] == "timings"
        assert asked <= row["prompt_tokens"] <= asked + 64, row  # the whole prompt, no cache
        assert row["pp_tps"] > 0 and row["tg_tps"] > 0
        assert row["total_s"] >= row["ttft_s"] > 0
    # what it ran against
    props = get_json(str(record["endpoint"]), "/props")
    digest = hashlib.sha256(llama_server_binary.read_bytes()).hexdigest()[:16]
    assert first["engine_build"] == props["build_info"]
    assert first["engine_file"] == f"sha256:{digest}"
    assert first["plan_hash"] == record["plan_hash"] and first["hardware"] == "small-cpu"
    assert first["engine"] == "llama.cpp" and first["orch_version"] == __version__
    datetime.strptime(str(first["date"]), "%Y-%m-%dT%H:%M:%SZ")
    summary = first["summary"]
    assert isinstance(summary, dict)
    steady = runs[int(str(first["steady_from"])) :]
    tg = [r["tg_tps"] for r in steady]
    assert summary["tg_tps"]["min"] == min(tg) and summary["tg_tps"]["max"] == max(tg)
    assert summary["tg_tps"]["n"] == len(steady) >= 2  # at most half is warm-up

    second = demo.run("bench", "demo", "--runs", "4", "--max-tokens", "16", timeout=300)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    header = lines.index("   #  prompt tok  generated   PP tok/s   TG tok/s   total s")
    assert [line.split()[0] for line in lines[header + 1 : header + 5]] == ["1", "2", "3", "4"]
    assert re.search(r"^mean +[\d,.]+ +[\d,.]+$", second.stdout, re.M)
    assert "saved as #2 (" in second.stdout
    print(f"\n[measured] orch bench demo --runs 4 --max-tokens 16:\n{second.stdout}")

    history = demo.run("bench", "demo", "--history", "--json")
    assert history.returncode == 0, history.stderr
    listed = json.loads(history.stdout)
    assert len(listed) == 2 and listed[0]["id"] == first["id"]
    assert all(len(r["runs"]) == 4 and "summary" in r for r in listed)
    second_id = listed[1]["id"]
    table = demo.run("bench", "demo", "--history")
    assert table.returncode == 0 and first["id"] in table.stdout and second_id in table.stdout

    compare = demo.run("bench", "demo", "--compare", timeout=300)
    print(f"[measured] orch bench demo --compare:\n{compare.stdout}")
    assert compare.returncode in (0, 7), compare.stdout + compare.stderr
    assert f"against {second_id}" in compare.stdout
    verdicts = re.findall(
        r"^  (TG|PP) tok/s .*  (" + "|".join(VERDICTS) + ")$", compare.stdout, re.M
    )
    assert [m[0] for m in verdicts] == ["TG", "PP"]
    assert (compare.returncode == 7) == any(v == "regression" for _, v in verdicts)
    rerun = ledger.read(_ledger(demo)).results[-1]
    assert rerun.planned == tuple(listed[1]["planned"]) and rerun.max_tokens == 16

    against_first = demo.run("bench", "demo", "--compare", "1", "--json", timeout=300)
    assert against_first.returncode in (0, 7), against_first.stderr
    report = json.loads(against_first.stdout)
    assert report["compare"]["ref"] == first["id"]
    changes = report["compare"]["changes"]
    assert [c["metric"] for c in changes] == ["TG tok/s", "PP tok/s"]
    for c in changes:
        assert c["verdict"] in VERDICTS and c["method"] in ("paired t", "Welch t")
        if c["low"] is not None:
            assert c["low"] <= c["change"] <= c["high"]
    assert (against_first.returncode == 7) == any(c["verdict"] == "regression" for c in changes)
    assert len(ledger.read(_ledger(demo)).results) == 4


def test_ledger_survives_a_cut_short_line(demo: OrchEnv) -> None:
    first = _bench_json(demo, "--runs", "2", "--max-tokens", "8")
    with _ledger(demo).open("a") as fh:
        fh.write('{"id": "20261130-000000-dead", "name": "demo", "runs": [{"ru')  # a crash
    history = demo.run("bench", "demo", "--history", "--json")
    assert history.returncode == 0
    assert [r["id"] for r in json.loads(history.stdout)] == [first["id"]]
    assert "skipped unreadable line(s) 2" in history.stderr
    second = _bench_json(demo, "--runs", "2", "--max-tokens", "8")
    listed = json.loads(demo.run("bench", "demo", "--history", "--json").stdout)
    assert [r["id"] for r in listed] == [first["id"], second["id"]]


def test_prompt_cache_is_defeated_unless_asked(demo: OrchEnv) -> None:
    fresh = _bench_json(demo, "--prompt-tokens", "512", "--runs", "3", "--max-tokens", "8")
    assert all(r["prompt_tokens"] >= 512 for r in fresh["runs"])
    cached = _bench_json(
        demo, "--prompt-tokens", "512", "--runs", "3", "--max-tokens", "8", "--prompt-cache"
    )
    runs = cached["runs"]
    assert isinstance(runs, list) and cached["prompt_cache"] is True
    assert runs[0]["prompt_tokens"] >= 512
    # the same prompt again: llama-server reuses its slot's cache and prefills only the rest
    assert all(r["prompt_tokens"] < 32 for r in runs[1:]), runs


def test_sweep_draws_a_picture_and_keeps_to_its_budget(demo: OrchEnv) -> None:
    sweep = _bench_json(demo, "--sweep", "--max-tokens", "8")
    limit = 2048 - 8 - 64
    assert sweep["method"] == "sweep" and sweep["planned"] == [0, 512, 1024, limit]
    runs = sweep["runs"]
    assert isinstance(runs, list) and [r["requested_tokens"] for r in runs] == [0, 512, 1024, limit]
    depths = [r["prompt_tokens"] for r in runs]
    assert depths == sorted(depths) and depths[-1] >= limit and sweep["skipped"] == []
    svg = demo.state / "bench" / "demo" / str(sweep["chart"])
    root = ET.fromstring(svg.read_text())
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "generation (TG) tok/s" in texts and "prompt processing (PP) tok/s" in texts
    assert "context depth: tokens in the prompt before generation (log scale)" in texts
    assert {"0", "512", "1K", str(limit)} <= set(texts)
    assert len(list(root.iter(f"{SVG_NS}circle"))) == 2 * len(runs)

    text = demo.run("bench", "demo", "--sweep", "--max-tokens", "8", "--budget", "0.001")
    assert text.returncode == 0, text.stderr
    for depth in (512, 1024, limit):
        assert f"depth {depth}: skipped (depth 512 was predicted to take" in text.stdout
    assert "chart: " in text.stdout and "    0  █" in text.stdout


def test_bench_errors(orch_env: OrchEnv, tiny_gguf: Path, llama_server_binary: Path) -> None:
    _demo_profile(orch_env, tiny_gguf, llama_server_binary, free_port())
    not_running = orch_env.run("bench", "demo")
    assert not_running.returncode == 6
    assert "demo is not running (start it with `orch up demo`)" in not_running.stderr
    empty = orch_env.run("bench", "demo", "--history", "--json")  # needs no engine
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    assert orch_env.run("up", "demo").returncode == 0
    try:
        limit = 2048 - 128 - 64
        cases = [
            (["--runs", "0"], "--runs: 0 must be greater than 0"),
            (["--prompt-tokens", "a,b"], "--prompt-tokens: 'a,b' is not a comma-separated list"),
            (["--prompt-tokens", "512,9000"], f"9000: more than the {limit} prompt tokens"),
            (["--depths", "0,4096"], f"--depths: 4096: more than the {limit} prompt tokens"),
            (["--max-tokens", "2000"], "--max-tokens: 2000 leaves no room for a prompt"),
            (["--compare"], "--compare: no earlier series result with plan hash"),
            (["--compare", "nosuch"], "--compare: 'nosuch' is no result in"),
        ]
        for args, message in cases:
            done = orch_env.run("bench", "demo", *args)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert message in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr
        assert not _ledger(orch_env).exists()  # nothing ran, nothing was written
    finally:
        assert orch_env.run("down", "demo").returncode == 0


def test_bench_vllm_streams_and_asks_its_version(orch_env: OrchEnv) -> None:
    from tests.test_warmup_vllm import TOKEN_S, _vllm_profile

    # its name holds TOKEN, so a profile may not set it (secrets): the process inherits it
    orch_env.env["FAKE_VLLM_TOKEN_S"] = str(TOKEN_S)
    orch_env.write_profile("v", _vllm_profile(free_port()))
    up = orch_env.run("up", "v", "--skip-memory-check")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        result = _bench_json(orch_env, "--runs", "3", "--max-tokens", "8", name="v")
        limit = 512 - 8 - 64  # max_model_len - generated - template margin
        assert result["planned"] == [limit] * 3 and result["engine"] == "vllm"
        assert result["engine_build"] == "0.33.0+fake"  # GET /version
        assert str(result["engine_file"]).startswith("sha256:")
        for row in result["runs"]:
            assert row["source"] == "wall-clock" and row["generated"] == 8
            assert row["tg_tps"] <= 1.02 / TOKEN_S
            assert limit - 16 <= row["prompt_tokens"] <= limit + 16  # the fake counts words
        sweep = _bench_json(orch_env, "--sweep", "--max-tokens", "8", name="v")
        assert [r["requested_tokens"] for r in sweep["runs"]] == [0, limit]
    finally:
        assert orch_env.run("down", "v").returncode == 0
