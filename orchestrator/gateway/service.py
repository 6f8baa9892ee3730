"""Run the gateway: one per state folder and port, uvicorn on a socket bound up front.

The state folder is locked (``flock``) for the gateway's lifetime, so a second gateway on
the same folder is refused before it touches anything, and the port is bound before any
engine starts, so a taken port is refused just as early. SIGTERM drains: the listener
closes, requests in flight get ``drain_grace_s`` to finish, then every instance the
gateway started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
import uvloop

from orchestrator import instances
from orchestrator.app import App
from orchestrator.errors import LaunchError, PreflightError
from orchestrator.gateway.config import ServeSettings, routes
from orchestrator.gateway.pool import Pool
from orchestrator.gateway.server import build_app
from orchestrator.notify import Notifier
from orchestrator.state import StateStore


def gateway_dir(state_dir: Path) -> Path:
    """Where the gateway keeps its lock and its status file."""
    return StateStore(state_dir).gateway_dir


def read_info(state_dir: Path) -> dict[str, Any] | None:
    """The running gateway's ``serve.json`` (pid, address, models), if any."""
    try:
        data = json.loads((gateway_dir(state_dir) / "serve.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[Path]:
    """Hold the gateway lock of ``state_dir``, or raise PreflightError naming the holder."""
    store = StateStore(state_dir)
    folder = store.ensure(store.gateway_dir)
    path = folder / "serve.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise store.error("open", path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise PreflightError(
                f"another orch serve (pid {holder}) already uses the state folder {state_dir}; "
                "stop it first, or give this one its own ORCH_STATE_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield folder
    finally:
        os.close(fd)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or PreflightError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: a reply's header and body writes must not wait for
    # the client's delayed ACK (Nagle), which costs ~40 ms per request on loopback
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PreflightError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another orch serve? "
            "pass --port or set [serve].port)"
        ) from None
    sock.set_inheritable(False)
    return sock


@dataclass(frozen=True)
class ServeOptions:
    """How ``orch serve`` runs."""

    names: tuple[str, ...]
    host: str
    port: int
    check_memory: bool = True


class _Server(uvicorn.Server):
    """uvicorn, telling the pool to drain as soon as SIGTERM/SIGINT arrives."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals once it has stopped; the drain is the answer
        # to SIGTERM here, so the gateway exits 0 after it instead of dying mid-cleanup
        self._captured_signals.clear()


def serve(
    app: App,
    options: ServeOptions,
    settings: ServeSettings,
    report: Callable[[str], None],
    notifier: Notifier,
) -> None:
    """Run until SIGTERM/SIGINT; ``report`` gets one line per milestone.

    Raises:
        PreflightError: The state folder or the port is taken, or settings are wrong.
        LaunchError: A pinned profile failed to start.
    """
    names = list(options.names)
    routes(names, settings)  # alias and pinned checks before anything starts
    store = StateStore(app.settings.state_dir)
    with state_lock(app.settings.state_dir) as folder, contextlib.ExitStack() as stack:
        sock = bind(options.host, options.port)
        stack.callback(sock.close)
        runtimes = instances.Runtimes(app.settings, stack)
        pool = Pool(app, names, settings, store, runtimes, check_memory=options.check_memory)
        info = folder / "serve.json"
        failure: list[BaseException] = []
        address = f"http://{options.host}:{options.port}"

        async def startup() -> None:
            try:
                await pool.start()
                for name in settings.pinned:
                    report(f"{name}: loading (pinned)")
                    notifier.status(f"loading pinned profile {name}")
                    pool.scheduler.want(name)
                    pool.poke()
                    await _wait_ready(pool, name)
                    report(f"{name}: ready (pinned)")
            except BaseException as exc:
                failure.append(exc)
                await pool.shutdown()
                raise

        async def shutdown() -> None:
            notifier.stopping()
            notifier.status("draining: stopping the instances it started")
            await pool.shutdown()
            report("stopped every instance it started")

        asgi = build_app(pool, on_startup=startup, on_shutdown=shutdown)
        config = uvicorn.Config(
            asgi,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=int(settings.drain_grace_s),
            timeout_keep_alive=30,
        )

        server = _Server(config, pool.request_drain)

        async def main() -> None:
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.005)
            if server.started:
                info.write_text(
                    json.dumps(
                        {
                            "pid": os.getpid(),
                            "address": address,
                            "models": names,
                            "started_at": time.time(),
                        }
                    )
                )
                report(f"listening on {address} ({', '.join(names)})")
                notifier.ready()
                notifier.status(f"serving {', '.join(names)} at {address}")
            await task

        try:
            # uvicorn picks its loop only in Server.run(); serving from our own coroutine
            # means choosing it here, or the stdlib selector loop runs every request
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
        finally:
            info.unlink(missing_ok=True)
        if failure:
            exc = failure[0]
            if isinstance(exc, LaunchError | PreflightError):
                raise exc
            raise LaunchError(f"orch serve: start-up failed: {exc}")


async def _wait_ready(pool: Pool, name: str) -> None:
    while True:
        run = pool.scheduler.models[name]
        if run.state == "ready":
            return
        served = pool.served[name]
        if run.state == "stopped" and served.phase == "failed":
            raise LaunchError(f"pinned profile {served.error}")
        await asyncio.sleep(0.02)
