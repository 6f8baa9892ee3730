"""What orch started: one JSON record per running profile, a lock per profile, logs, caches.

Every path under the state folder is built here, from a validated profile name or key, so
nothing a command line, a profile or a record says can place a file outside it:

- ``STATE_DIR/run/NAME.json``: the record of a running instance;
- ``STATE_DIR/run/NAME.lock``: its lock (``fcntl.flock``, so a crashed ``orch up`` never
  leaves a stale lock behind);
- ``STATE_DIR/logs/NAME.log``: its engine output;
- ``STATE_DIR/cache/KIND/KEY.json``: caches (engine flag sets per image ID);
- ``STATE_DIR/gateway/``: ``orch serve``'s lock and status file;
- ``STATE_DIR/bench/NAME/``: ``orch bench``'s ledger and charts;
- ``STATE_DIR/podman.PID.sock``: a private podman API socket.

A record is data that anyone who can write the state folder can change, so it is parsed
strictly (:class:`CorruptRecord` otherwise) and never trusted on its own: the runtimes act on
a record's process or container only when it is provably the one orch started (see
``instances.Runtimes.attach``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import TypeAdapter, ValidationError

from orchestrator.errors import PreflightError
from orchestrator.names import is_profile_name, require_profile_name

RuntimeKind = Literal["process", "podman"]

CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
"""A full podman container ID."""

_CACHE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StateError(PreflightError):
    """The state folder cannot be used (not a folder, not writable, not creatable)."""


class CorruptRecord(StateError):
    """A run record that is not what orch writes: not trusted, never acted on."""

    def __init__(self, name: str, path: Path, why: str) -> None:
        self.name = name
        self.path = path
        self.why = why
        self.valid_name = is_profile_name(name)
        super().__init__(f"{path}: corrupt run record ({why}); not trusted")


@dataclass(frozen=True)
class Record:
    """One running instance, as ``orch up`` left it."""

    name: str
    runtime: RuntimeKind
    plan_hash: str
    endpoint: str
    port: int
    started_at: float
    log_path: str
    """Informational: orch reads and writes ``StateStore.log_path(name)``, never this."""
    pid: int | None = None
    pid_create_time: float | None = None
    """The process's start time (psutil); a process record without it is never trusted."""
    container_id: str | None = None
    container_name: str | None = None
    engine: str = ""
    gpus: tuple[int, ...] = ()
    needs_whole_gpu: bool = False
    supervisor_pid: int | None = None
    supervisor_create_time: float | None = None
    """The supervisor's start time: it is signalled only while this still matches."""
    gateway_pid: int | None = None
    """The ``orch serve`` process that started (or adopted) it; None for ``orch up``."""
    predicted_bytes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["gpus"] = list(self.gpus)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """:meth:`from_json_text` for a parsed dict (its ``name`` is the expected one)."""
        return cls.from_json_text(json.dumps(data), str(data.get("name", "")))

    @classmethod
    def from_json_text(cls, text: str | bytes, name: str) -> Record:
        """Parse a record strictly; unknown keys are ignored (older or newer orch).

        Raises:
            ValueError: The text is not a record orch could have written for ``name``.
        """
        try:
            record = _RECORD.validate_json(text, strict=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None
        problem = record.problem(name)
        if problem:
            raise ValueError(problem)
        return record

    def problem(self, name: str) -> str | None:
        """What makes this record one orch could not have written for ``name``."""
        if self.name != name:
            return f"name: {self.name!r} is not the file's name {name!r}"
        numbers = (self.started_at, self.pid_create_time, self.supervisor_create_time)
        if not all(n is None or math.isfinite(n) for n in numbers):
            return "a time is not a finite number"
        for key in ("pid", "supervisor_pid", "gateway_pid"):
            value = getattr(self, key)
            if value is not None and value < 2:
                return f"{key}: {value} is not a process orch starts"
        if not 1 <= self.port <= 65535:
            return f"port: {self.port} is not a port"
        if self.container_id is not None and not CONTAINER_ID.fullmatch(self.container_id):
            return f"container_id: {self.container_id!r} is not a container ID"
        if self.runtime == "process" and self.pid is None:
            return "pid: missing for a process"
        if self.runtime == "podman" and self.container_id is None:
            return "container_id: missing for a container"
        return None


_RECORD = TypeAdapter(Record)


def open_for_writing(path: Path) -> BinaryIO:
    """Create or truncate ``path`` (and its folder), never writing through a symlink.

    Raises:
        OSError: It cannot be created, or it is a symlink (``ELOOP``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class StateStore:
    """The records, locks, logs and caches under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        """A store rooted at ``state_dir`` (created on first write)."""
        self.root = state_dir
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"
        self.cache_dir = state_dir / "cache"
        self.gateway_dir = state_dir / "gateway"
        self.bench_dir = state_dir / "bench"

    # ------------------------------------------------------------ paths

    def _named(self, folder: Path, name: str, suffix: str) -> Path:
        require_profile_name(name, f"state folder {self.root}", "profile name")
        return folder / f"{name}{suffix}"

    def record_path(self, name: str) -> Path:
        """Where ``name``'s record lives."""
        return self._named(self.run_dir, name, ".json")

    def lock_path(self, name: str) -> Path:
        """``name``'s lock file."""
        return self._named(self.run_dir, name, ".lock")

    def log_path(self, name: str) -> Path:
        """Where ``name``'s engine output goes."""
        return self._named(self.log_dir, name, ".log")

    def bench_folder(self, name: str) -> Path:
        """Where ``orch bench`` keeps ``name``'s ledger and charts."""
        return self._named(self.bench_dir, name, "")

    def cache_path(self, kind: str, key: str) -> Path:
        """A cache file: ``cache/KIND/KEY.json`` (key: letters, digits, ``._-``)."""
        for part in (kind, key):
            if not _CACHE_KEY.fullmatch(part):
                raise StateError(f"state folder {self.root}: {part!r} is not a cache key")
        return self.cache_dir / kind / f"{key}.json"

    def podman_socket(self, pid: int) -> Path:
        """The socket of a private ``podman system service`` run by process ``pid``."""
        return self.root / f"podman.{int(pid)}.sock"

    def ensure(self, folder: Path) -> Path:
        """Create ``folder`` (one of this store's) or raise StateError saying why not."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.error("create", exc.filename or folder, exc) from None
        if not folder.is_dir():
            raise StateError(f"state folder {self.root}: {folder} is not a folder")
        return folder

    def error(self, doing: str, path: str | Path, exc: OSError) -> StateError:
        """A StateError for an OS error on one of this store's paths."""
        return StateError(
            f"state folder {self.root}: cannot {doing} {path}: {_reason(exc)} "
            "(ORCH_STATE_DIR / state_dir must be a writable folder)"
        )

    # ------------------------------------------------------------ records

    def load(self, name: str) -> Record | None:
        """The record for ``name``, or None when there is none.

        Raises:
            CorruptRecord: The file is not a record orch wrote (never acted on).
            StateError: It exists but cannot be read.
        """
        path = self.record_path(name)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None  # run/ (or the state folder) is a file: nothing was recorded there
        except OSError as exc:
            raise self.error("read", path, exc) from None
        try:
            return Record.from_json_text(text, name)
        except ValueError as exc:
            raise CorruptRecord(name, path, str(exc)) from None

    def save(self, record: Record) -> None:
        """Write atomically (temp file + rename)."""
        path = self.record_path(record.name)
        self.ensure(self.run_dir)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self.error("write", path, exc) from None

    def remove(self, name: str) -> None:
        """Forget ``name`` (no error if it was not recorded)."""
        path = self.record_path(name)
        try:
            path.unlink(missing_ok=True)
        except NotADirectoryError:
            return
        except OSError as exc:
            raise self.error("remove", path, exc) from None

    def scan(self) -> tuple[list[Record], list[CorruptRecord]]:
        """Every record sorted by name, and the corrupt ones apart."""
        try:
            paths = sorted(self.run_dir.glob("*.json")) if self.run_dir.is_dir() else []
        except OSError as exc:
            raise self.error("list", self.run_dir, exc) from None
        good: list[Record] = []
        bad: list[CorruptRecord] = []
        for path in paths:
            if not is_profile_name(path.stem):
                bad.append(CorruptRecord(path.stem, path, "not a profile name"))
                continue
            try:
                record = self.load(path.stem)
            except CorruptRecord as exc:
                bad.append(exc)
                continue
            if record is not None:
                good.append(record)
        return good, bad

    def all(self) -> list[Record]:
        """Every valid record, sorted by name (corrupt ones: :meth:`scan`)."""
        return self.scan()[0]

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold ``name``'s lock, or raise PreflightError if another orch holds it."""
        path = self.lock_path(name)
        self.ensure(self.run_dir)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise self.error("open", path, exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 16, 0).decode(errors="replace").strip()
                raise PreflightError(
                    f"{name}: another orch command (pid {holder if holder.isdigit() else '?'}) "
                    "is starting or stopping it; wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)
