"""The podman runtime: launch with the plan's own argv, then manage through the API socket.

``podman run`` is executed exactly as ``orch plan`` shows it. Everything after that (state,
exit code, logs, stop, remove) goes through podman-py over the API socket: the host's if one
answers, else a short-lived ``podman system service`` that orch starts and removes itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podman import PodmanClient
from podman.api import stream_frames
from podman.errors import APIError, NotFound

from orchestrator.errors import LaunchError, PreflightError
from orchestrator.state import CONTAINER_ID, StateStore, open_for_writing

LABEL = "orch.profile"
PLAN_LABEL = "orch.plan"
SERVICE_IDLE_S = 60
"""``podman system service --time``: the service exits on its own if orch is killed."""


def _ping(uri: str, timeout: float = 2.0) -> PodmanClient | None:
    client = PodmanClient(base_url=uri, timeout=timeout)
    try:
        if client.ping():
            return client
    except Exception:  # noqa: BLE001 - any failure means "not this socket"
        pass
    client.close()  # type: ignore[no-untyped-call]
    return None


def host_sockets(environ: Mapping[str, str]) -> list[str]:
    """Candidate API sockets on this host, most specific first."""
    out = []
    if environ.get("CONTAINER_HOST", "").startswith("unix://"):
        out.append(environ["CONTAINER_HOST"])
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        out.append(f"unix://{runtime_dir}/podman/podman.sock")
    if os.geteuid() == 0:
        out.append("unix:///run/podman/podman.sock")
    return [uri for uri in out if Path(uri.removeprefix("unix://")).exists()]


@contextlib.contextmanager
def connect(podman_binary: str, state_dir: Path, *, wait_s: float = 15.0) -> Iterator[PodmanClient]:
    """A podman-py client: the host's socket if one answers, else a private service.

    Raises:
        PreflightError: If no service answers and none can be started.
    """
    for uri in host_sockets(os.environ):
        client = _ping(uri)
        if client is not None:
            try:
                yield client
            finally:
                client.close()  # type: ignore[no-untyped-call]
            return
    store = StateStore(state_dir)
    store.ensure(state_dir)
    sock = store.podman_socket(os.getpid())
    sock.unlink(missing_ok=True)
    uri = f"unix://{sock}"
    try:
        service = subprocess.Popen(
            [podman_binary, "system", "service", f"--time={SERVICE_IDLE_S}", uri],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise PreflightError(f"cannot run {podman_binary}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + wait_s
        client = None
        while client is None:
            if service.poll() is not None:
                err = service.stderr.read().decode(errors="replace") if service.stderr else ""
                raise PreflightError(f"podman system service exited: {err.strip()[-500:]}")
            if time.monotonic() > deadline:
                raise PreflightError(f"podman system service did not answer on {sock}")
            if sock.exists():
                client = _ping(uri)
            if client is None:
                time.sleep(0.02)
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]
    finally:
        service.terminate()
        try:
            service.wait(timeout=5)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        if service.stderr:
            service.stderr.close()
        sock.unlink(missing_ok=True)


def _state(attrs: dict[str, Any]) -> tuple[str, int | None, int | None]:
    """(status, exit code, host pid) from inspect or list attrs (State may be a string)."""
    state = attrs.get("State")
    if isinstance(state, dict):
        pid = state.get("Pid") or None
        return str(state.get("Status", "unknown")), state.get("ExitCode"), pid
    return str(state or "unknown"), attrs.get("ExitCode"), attrs.get("Pid") or None


def _labels(attrs: dict[str, Any]) -> dict[str, Any]:
    """A container's labels, from inspect (``Config.Labels``) or list (``Labels``) attrs."""
    config = attrs.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else attrs.get("Labels")
    return labels if isinstance(labels, dict) else {}


class ContainerHandle:
    """A container orch launched, managed over the API."""

    def __init__(
        self,
        client: PodmanClient,
        container_id: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Attach to ``container_id``.

        ``labels``: attached from a record, the labels orch gave it (``orch.profile``,
        ``orch.plan``). A container whose labels differ is not this instance: it reads as
        ``foreign`` and is never stopped, removed or read. None when orch just launched it.
        """
        self.client = client
        self.id = container_id
        self.name = name
        self.labels = dict(labels) if labels is not None else None

    def _attrs(self) -> dict[str, Any] | None:
        """Inspect attrs; None when it is gone or (attached from a record) not orch's."""
        attrs = self._inspect()
        return attrs if attrs is not None and self._ours(attrs) else None

    def _inspect(self) -> dict[str, Any] | None:
        if not CONTAINER_ID.fullmatch(self.id):
            return None
        try:
            container = self.client.containers.get(self.id)
        except NotFound:
            return None
        attrs: dict[str, Any] = container.attrs
        return attrs

    def _ours(self, attrs: dict[str, Any]) -> bool:
        if self.labels is None:
            return True
        found = _labels(attrs)
        return all(found.get(k) == v for k, v in self.labels.items())

    def exists(self) -> bool:
        """Whether the container still exists (running or not) and is orch's."""
        return self._attrs() is not None

    def status(self) -> str:
        """``running``, ``exited``, …; ``gone`` when removed; ``foreign`` when not orch's."""
        attrs = self._inspect()
        if attrs is None:
            return "gone"
        return _state(attrs)[0] if self._ours(attrs) else "foreign"

    def alive(self) -> bool:
        """Whether it is running."""
        return self.status() in ("running", "created", "configured", "initialized")

    def exit_code(self) -> int | None:
        """Exit status once stopped."""
        attrs = self._attrs()
        if attrs is None:
            return None
        status, code, _ = _state(attrs)
        return None if status == "running" else code

    def _output(self) -> bytes | None:
        """The container's whole output so far (stdout and stderr, in order)."""
        try:
            container = self.client.containers.get(self.id)
            chunks = container.logs(stdout=True, stderr=True)
            return b"".join(c if isinstance(c, bytes) else str(c).encode() for c in chunks)
        except (NotFound, APIError):
            return None

    def log_tail(self, lines: int) -> list[str]:
        """The last lines of the container's output.

        Cut here, not by podman's ``tail``: podman 4.3 counts each partial-line log entry as
        a line and glues the pieces of the lines it cuts into the wrong order.
        """
        if lines <= 0 or self._attrs() is None:
            return []
        data = self._output()
        return [] if data is None else data.decode(errors="replace").splitlines()[-lines:]

    def follow(self, lines: int) -> Iterator[bytes]:
        """The last ``lines`` lines, then new output, until the container stops.

        The history is cut from a snapshot of the whole output (see :meth:`log_tail`); the
        stream then starts from the beginning and skips exactly the snapshot's bytes before
        that cut, so nothing is missed or repeated between history and new output. No read
        timeout: the client's short one would end a quiet stream.
        """
        if self._attrs() is None:
            return
        snapshot = self._output()
        if snapshot is None:
            return
        kept = b"".join(snapshot.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
        skip = len(snapshot) - len(kept)
        try:
            response = self.client.api.get(
                f"/containers/{self.id}/logs",
                params={"follow": True, "stdout": True, "stderr": True},
                stream=True,
                timeout=(10.0, None),
            )
            response.raise_for_status()
        except NotFound:
            return  # removed meanwhile: nothing left to follow
        try:
            for frame in stream_frames(response):
                data = frame if isinstance(frame, bytes) else str(frame).encode()
                if skip >= len(data):
                    skip -= len(data)
                    continue
                yield data[skip:]
                skip = 0
        finally:
            response.close()

    def describe(self) -> str:
        """``container NAME (ID12)``."""
        return f"container {self.name} ({self.id[:12]})"

    def pids(self) -> list[int]:
        """Host pids of the container's processes."""
        import psutil

        attrs = self._attrs()
        pid = _state(attrs)[2] if attrs else None
        if not pid:
            return []
        try:
            root = psutil.Process(int(pid))
            return [root.pid] + [c.pid for c in root.children(recursive=True)]
        except psutil.Error:
            return []

    def save_logs(self, path: Path) -> None:
        """Copy the container's whole output to ``path`` (before removal)."""
        data = self._output() if self._attrs() is not None else None
        if data is None:
            return
        with contextlib.suppress(OSError), open_for_writing(path) as out:
            out.write(data)

    def stop(self, grace_s: float) -> None:
        """``stop`` with timeout ``grace_s`` (SIGTERM, then SIGKILL), then remove; idempotent."""
        if self._attrs() is None:
            return  # gone, or not orch's to stop
        try:
            container = self.client.containers.get(self.id)
        except NotFound:
            return
        try:
            if _state(container.attrs)[0] == "running":
                container.stop(timeout=max(int(grace_s), 1))
            container.remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            raise LaunchError(f"{self.describe()}: could not stop: {exc}") from None


def find(client: PodmanClient, profile: str) -> list[ContainerHandle]:
    """Containers labelled ``orch.profile=PROFILE`` (any state)."""
    out = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={profile}"}):
        names = container.attrs.get("Names") or [container.name]
        out.append(ContainerHandle(client, container.id, str(names[0]).lstrip("/")))
    return out


@dataclass(frozen=True)
class ImageInfo:
    """What ``podman image inspect`` says about a local image."""

    id: str
    """The full image ID (a sha256 hex digest); changes whenever the image is rebuilt."""
    entrypoint: tuple[str, ...]
    """The image's ENTRYPOINT: ``podman run IMAGE ARGS`` hands the engine arguments to it."""


def inspect_image(podman_binary: str, image: str) -> ImageInfo | None:
    """``podman image inspect IMAGE``; None when no such image is present locally.

    Raises:
        PreflightError: If podman cannot be run at all.
    """
    try:
        done = subprocess.run(
            [podman_binary, "image", "inspect", image],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PreflightError(f"cannot run {podman_binary}: {exc}") from None
    if done.returncode != 0:
        return None
    try:
        (attrs,) = json.loads(done.stdout)
        entrypoint = (attrs.get("Config") or {}).get("Entrypoint") or ()
        if isinstance(entrypoint, str):
            entrypoint = (entrypoint,)
        return ImageInfo(str(attrs["Id"]), tuple(str(a) for a in entrypoint))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PreflightError(f"podman image inspect {image}: unexpected output") from None


HELP_TIMEOUT_S = 120.0
"""Limit for the throwaway ``--help`` container (start-up on a loaded host included)."""


def engine_help(podman_binary: str, image: ImageInfo, *, timeout: float = HELP_TIMEOUT_S) -> str:
    """The output of the image's entrypoint run with ``--help``, in a throwaway container.

    ``podman run --rm --network none --pull never --entrypoint ENTRYPOINT IMAGE-ID --help``:
    run by ID so the text belongs to exactly the image inspected, no network, nothing kept.

    Raises:
        PreflightError: If the container cannot run or the command exits non-zero.
    """
    entrypoint = image.entrypoint[0] if len(image.entrypoint) == 1 else json.dumps(image.entrypoint)
    name = f"orch-flags-{image.id[:12]}-{os.getpid()}"
    argv = [
        podman_binary,
        "run",
        "--rm",
        "--network",
        "none",
        "--pull",
        "never",
        "--name",
        name,
        "--entrypoint",
        entrypoint,
        image.id,
        "--help",
    ]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except OSError as exc:
        raise PreflightError(f"cannot run {podman_binary}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        subprocess.run(
            [podman_binary, "rm", "--force", "--ignore", name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        raise PreflightError(
            f"{' '.join(image.entrypoint)} --help in image {image.id[:12]} "
            f"did not finish in {timeout:.0f} s"
        ) from None
    text = (done.stdout + done.stderr).decode(errors="replace")
    # ik_llama.cpp's --help exits 1 after printing the usage: judge by what it printed
    if done.returncode != 0 and not re.search(r"(?m)^\s*--?[a-z]", text):
        raise PreflightError(
            f"{' '.join(image.entrypoint)} --help in image {image.id[:12]} "
            f"exited {done.returncode}: {text.strip()[-500:]}"
        )
    return text


def launch(
    client: PodmanClient,
    argv: Sequence[str],
    env: Mapping[str, str],
    name: str,
    log_path: Path,
) -> ContainerHandle:
    """Run the plan's ``podman run -d …`` as is and attach to the container it made.

    A leftover container of the same name (stopped, from an earlier run) is removed first.

    Raises:
        LaunchError: If ``podman run`` fails (its stderr is the message).
    """
    with contextlib.suppress(NotFound):
        old = client.containers.get(name)
        if LABEL not in _labels(old.attrs):
            raise LaunchError(
                f"a container named {name} exists and orch did not start it (no {LABEL} "
                "label); remove or rename it"
            )
        old.remove(force=True)
    try:
        log = open_for_writing(log_path)
    except OSError as exc:
        raise LaunchError(f"cannot write the log {log_path}: {exc.strerror or exc}") from None
    with log:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=dict(env),
            timeout=300,
            check=False,
        )
        err = done.stderr.decode(errors="replace").strip()
        log.write((err + "\n").encode() if err else b"")
    if done.returncode != 0:
        raise LaunchError(f"podman run failed (exit {done.returncode}):\n  {err[-2000:]}")
    container_id = done.stdout.decode().strip().splitlines()[-1]
    return ContainerHandle(client, container_id, name)
