"""`GET /` in a real headless Chromium: every state, memory, queue, tok/s and load progress.

Four profiles of the real llama-server are brought into the four states at once: one
ready (it has answered), one busy with two more requests queued behind its one slot, one
loading (its weight reads are slowed down by tests/throttle, as from a slow disk) and one
never asked for. Chromium renders the page; the test reads the DOM it built and keeps a
screenshot. `--update-golden` copies that screenshot to docs/gateway-status.png (the
README's picture).
"""

from __future__ import annotations

import html.parser
import http.client
import json
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO, OrchEnv
from tests.test_gateway_serve import Gateway, _profile, _slow_profile, _start

SCREENSHOT = REPO / "docs" / "gateway-status.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _browse(chromium: str, profile_dir: Path, url: str, *args: str) -> str:
    """Run Chromium once with a fresh profile folder; its stdout."""
    profile_dir.mkdir(parents=True)
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *args, url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class Rows(html.parser.HTMLParser):
    """The status table as Chromium built it: per row, its data-* attributes and cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self._row: dict[str, Any] | None = None
        self._cell: list[str] | None = None
        self.progress: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-model" in attr:
            self._row = {"state": attr["data-state"], "cells": []}
            self.rows[attr["data-model"]] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "progress" and self._row is not None:
            name = next(k for k, v in self.rows.items() if v is self._row)
            self.progress[name] = attr
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _wait(gw: Gateway, ready: Any, what: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    models: dict[str, Any] = {}
    while time.monotonic() < deadline:
        models = {m["name"]: m for m in gw.status()["models"]}
        if ready(models):
            return models
        time.sleep(0.1)
    raise AssertionError(f"never saw {what}: {json.dumps(models, indent=1)[:3000]}")


def _long_request(gw: Gateway, model: str, results: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=600)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 8000,
        "ignore_eos": True,
    }
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    response.read()
    results.append(response.status)
    conn.close()


def test_status_page_in_chromium(
    orch_env: OrchEnv,
    llama_server_binary: Path,
    tiny_gguf: Path,
    throttle_so: Path,
    chromium: str,
    update_golden: bool,
    tmp_path: Path,
) -> None:
    hw = "small-cpu"
    ports = {
        "chat": _profile(orch_env, "chat", llama_server_binary, tiny_gguf, hardware=hw),
        "batch": _profile(orch_env, "batch", llama_server_binary, tiny_gguf, ctx=8192, hardware=hw),
        "big-load": _slow_profile(
            orch_env,
            "big-load",
            llama_server_binary,
            tiny_gguf,
            throttle_so,
            read_bps=40_000,
            hardware=hw,
        ),
        "spare": _profile(orch_env, "spare", llama_server_binary, tiny_gguf, hardware=hw),
    }
    config = orch_env.root / "orch.toml"
    config.write_text(
        '[serve]\ndrain_grace_s = 2\n[serve.profiles.chat]\naliases = ["assistant"]\npriority = 5\n'
    )
    orch_env.env["ORCH_CONFIG"] = str(config)
    gw = _start(orch_env, list(ports), ports)
    threads: list[threading.Thread] = []
    results: list[int] = []
    try:
        assert gw.chat("assistant")[0] == 200
        assert gw.chat("batch", max_tokens=2)[0] == 200
        threads.append(threading.Thread(target=gw.chat, args=("big-load",)))
        threads[-1].start()
        _wait(
            gw,
            lambda m: (
                m["big-load"]["state"] == "loading"
                and (m["big-load"]["progress"] or {}).get("eta_s")
                and 0 < m["big-load"]["progress"]["fraction"] < 1
            ),
            "big-load loading with a rate and an ETA",
        )
        for _ in range(3):  # one runs in batch's single slot, two wait behind it
            threads.append(threading.Thread(target=_long_request, args=(gw, "batch", results)))
            threads[-1].start()
        seen = _wait(
            gw,
            lambda m: m["batch"]["state"] == "busy" and m["batch"]["queued"] == 2,
            "batch busy with 2 queued",
        )
        assert seen["big-load"]["state"] == "loading"  # its load takes about 40 s
        assert seen["chat"]["state"] == "ready" and seen["spare"]["state"] == "stopped"

        url = f"http://127.0.0.1:{gw.port}/"
        dom = _browse(chromium, tmp_path / "chromium-dom", url, "--dump-dom")
        shot = tmp_path / "status.png"
        _browse(
            chromium,
            tmp_path / "chromium-shot",
            url,
            f"--screenshot={shot}",
            "--window-size=1060,400",
            "--hide-scrollbars",
        )
    finally:
        code, out, err = gw.stop(timeout=120)
        for t in threads:
            t.join(timeout=120)
    assert code == 0, out + err

    page = Rows()
    page.feed(dom)
    assert list(page.rows) == ["chat", "batch", "big-load", "spare"]
    states = {name: row["state"] for name, row in page.rows.items()}
    assert states == {"chat": "ready", "batch": "busy", "big-load": "loading", "spare": "stopped"}
    cells = {name: row["cells"] for name, row in page.rows.items()}
    # columns: model, state, memory, in flight / slots, queued, last tok/s, note
    assert "assistant" in cells["chat"][0] and "priority 5" in cells["chat"][0]
    for name in ("chat", "batch"):
        memory = cells[name][2]
        assert memory.startswith("CPU ") and " MiB / " in memory and "-" not in memory.split("/")[0]
    assert cells["spare"][2].startswith("CPU - / ")  # nothing in use, the plan still shown
    assert cells["batch"][3] == "1 / 1" and int(cells["batch"][4]) >= 1
    assert float(cells["chat"][5]) > 0  # its warm-up's tok/s
    assert cells["spare"][3:6] == ["0 / 1", "0", "-"]
    loading = cells["big-load"][1]
    assert loading.startswith("loading ") and "% " in loading and " read " in loading
    assert "ETA" in loading and "/s" in loading
    assert 0 < float(page.progress["big-load"]["value"]) < 1

    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1060, 400)
    if update_golden:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    # the drain grace (2 s) ends before batch's queue does: what had not finished is a 503
    assert results and all(code in (200, 503) for code in results), results
