"""Readiness: poll ``/health`` until 200, notice an engine that died, and say why it did.

llama-server answers 503 while loading, then 200. vLLM refuses connections until it is
ready, then answers 200 and lists its served model name under ``/v1/models``.
Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import LaunchError, ReadyTimeout

FIRST_DELAY_S = 0.02
MAX_DELAY_S = 0.5
ACTIVITY_TICK_S = 0.005
TAIL_LINES = 15
SEARCH_LINES = 200


@dataclass(frozen=True)
class Cause:
    """A recognised reason an engine failed, and what to do about it."""

    name: str
    pattern: re.Pattern[str]
    fix: str


CAUSES: tuple[Cause, ...] = (
    Cause(
        "out of memory",
        re.compile(
            r"out of memory|cudaMalloc failed|failed to allocate|bad_alloc|"
            r"cannot allocate memory|OutOfMemoryError",
            re.I,
        ),
        "lower engine.ctx / engine.gpu_layers, move experts to the CPU (engine.cpu_moe), "
        "or free memory; `orch plan NAME` shows the budget",
    ),
    Cause(
        "address already in use",
        re.compile(r"address already in use|couldn't bind|failed to bind|bind\(\) failed", re.I),
        "pick another publish.port, or stop what listens there (`ss -ltnp`)",
    ),
    Cause(
        "unknown or invalid argument",
        re.compile(
            r"unknown argument|invalid argument|unrecognized arguments?|invalid value|"
            r"error while handling argument|invalid parameter for argument",
            re.I,
        ),
        "check engine.extra_args against the engine's --help (engine.version may be wrong)",
    ),
    Cause(
        "model file missing or unloadable",
        re.compile(
            r"failed to load model|unable to load model|error loading model|"
            r"no such file or directory|failed to open|gguf_init_from_file|"
            r"not within the file bounds|corrupt",
            re.I,
        ),
        "check model.path (and for podman model.mount_root); re-download the GGUF if it is "
        "truncated or corrupt",
    ),
    Cause(
        "image not found",
        re.compile(
            r"image not known|manifest unknown|initializing source|"
            r"pinging container registry|no such image|repository .* not found",
            re.I,
        ),
        "build or pull runtime.image (`podman image exists IMAGE` must succeed)",
    ),
)


def classify(lines: list[str]) -> Cause | None:
    """The first known cause found in the log lines (latest lines weigh first)."""
    for cause in CAUSES:
        for line in reversed(lines):
            if cause.pattern.search(line):
                return cause
    return None


def explain(headline: str, lines: list[str], show: int = TAIL_LINES) -> str:
    """A multi-line message: headline, cause and fix if known, then the last log lines.

    Args:
        headline: The first line.
        lines: The log tail searched for a cause (usage dumps can push the error up).
        show: How many of the last lines to include.
    """
    text = headline
    cause = classify(lines)
    if cause is not None:
        evidence = next(line for line in reversed(lines) if cause.pattern.search(line))
        text += f"\n  cause: {cause.name} (log: {evidence.strip()[:200]})\n  fix:   {cause.fix}"
    shown = [line.rstrip() for line in lines[-show:] if line.strip()]
    if shown:
        text += "\n  last log lines:\n    " + "\n    ".join(shown)
    return text


def _split(endpoint: str) -> tuple[str, int, str]:
    url = urllib.parse.urlsplit(endpoint)
    return url.hostname or "127.0.0.1", url.port or 80, url.path.rstrip("/")


def request(
    endpoint: str,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    api_key: str | None = None,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """One HTTP request; raises OSError (refused, reset, timeout) when nothing answers."""
    try:
        conn, response = send(
            endpoint, path, method=method, body=body, api_key=api_key, timeout=timeout
        )
        with contextlib.closing(conn):
            return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from None


def send(
    endpoint: str,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    api_key: str | None = None,
    timeout: float = 2.0,
    accept: str | None = None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send one request and return the open connection and its response (for streaming).

    The caller closes the connection. Raises OSError or http.client.HTTPException.
    """
    host, port, prefix = _split(endpoint)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Connection": "close"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if accept:
        headers["Accept"] = accept
    try:
        conn.request(method, prefix + path, body=payload, headers=headers)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def get_json(endpoint: str, path: str, *, api_key: str | None = None, timeout: float = 2.0) -> Any:
    """GET and decode JSON; None on any failure."""
    try:
        status, data = request(endpoint, path, api_key=api_key, timeout=timeout)
        return json.loads(data) if status == 200 else None
    except (OSError, ValueError):
        return None


def probe(endpoint: str, path: str = "/health", timeout: float = 2.0) -> int | None:
    """The HTTP status of ``GET path``, or None when nothing answers."""
    try:
        return request(endpoint, path, timeout=timeout)[0]
    except OSError:
        return None


def served_names(endpoint: str, api_key: str | None = None) -> list[str]:
    """Model ids listed by ``/v1/models``."""
    data = get_json(endpoint, "/v1/models", api_key=api_key)
    if not isinstance(data, dict):
        return []
    return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]


@dataclass(frozen=True)
class Ready:
    """How readiness went."""

    seconds: float
    polls: int


def wait_ready(
    endpoint: str,
    *,
    deadline_s: float,
    alive: Callable[[], bool],
    log_tail: Callable[[int], list[str]],
    exit_code: Callable[[], int | None] = lambda: None,
    path: str = "/health",
    served_name: str | None = None,
    api_key: str | None = None,
    on_poll: Callable[[float, int | None], None] | None = None,
    activity: Callable[[], Hashable] | None = None,
) -> Ready:
    """Poll until ready, the engine dies, or the deadline passes.

    The delay starts at 20 ms and doubles up to 500 ms, so a quick load is noticed fast
    and a slow one is not hammered. With ``activity``, a change in what it returns (the
    engine wrote to its log, as it does when loading ends) polls at once and restarts the
    back-off, so readiness is noticed within milliseconds of the engine saying so.

    Args:
        endpoint: ``http://host:port``.
        deadline_s: Give up after this many seconds.
        alive: Whether the engine still runs (checked between polls).
        log_tail: The engine's last log lines, for the error message.
        exit_code: The engine's exit status once it stopped, if known.
        path: The health path.
        served_name: vLLM: also wait until ``/v1/models`` lists this name.
        api_key: Bearer token for ``/v1/models``.
        on_poll: Called after each poll with (elapsed seconds, HTTP status or None).
        activity: Checked every few milliseconds between polls; a new value polls at once.

    Returns:
        The time it took.

    Raises:
        LaunchError: The engine exited, or was not ready within the deadline.
    """
    start = time.monotonic()
    delay = FIRST_DELAY_S
    polls = 0
    last: int | None = None
    while True:
        status = probe(endpoint, path, timeout=min(2.0, max(deadline_s, 0.1)))
        polls += 1
        last = status
        elapsed = time.monotonic() - start
        if on_poll is not None:
            on_poll(elapsed, status)
        if status == 200 and (
            served_name is None or served_name in served_names(endpoint, api_key)
        ):
            return Ready(elapsed, polls)
        if not alive():
            code = exit_code()
            how = f"exited with status {code}" if code is not None else "exited"
            raise LaunchError(
                explain(
                    f"engine {how} while loading (after {elapsed:.1f} s)", log_tail(SEARCH_LINES)
                )
            )
        if elapsed >= deadline_s:
            seen = "no answer" if last is None else f"HTTP {last}"
            raise ReadyTimeout(
                explain(
                    f"not ready after {deadline_s:g} s (last {path}: {seen}); raise "
                    "health.timeout_s or pass --timeout if the model just loads slowly",
                    log_tail(SEARCH_LINES),
                )
            )
        wait = min(delay, max(deadline_s - elapsed, 0.0))
        if activity is None:
            time.sleep(wait)
        elif _changed_within(activity, wait):
            delay = FIRST_DELAY_S
            continue
        delay = min(delay * 2, MAX_DELAY_S)


def _changed_within(activity: Callable[[], Hashable], seconds: float) -> bool:
    """Sleep up to ``seconds``; return early (True) when ``activity()`` changes."""
    before = activity()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(ACTIVITY_TICK_S, left))
        if activity() != before:
            return True
    return False
