"""What orch started: one JSON record per running profile, and a lock per profile.

Records live in ``STATE_DIR/run/NAME.json``; locks in ``STATE_DIR/run/NAME.lock``
(``fcntl.flock``, so a crashed ``orch up`` never leaves a stale lock behind).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.errors import PreflightError

RuntimeKind = Literal["process", "podman"]


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
    pid: int | None = None
    pid_create_time: float | None = None
    container_id: str | None = None
    container_name: str | None = None
    engine: str = ""
    gpus: tuple[int, ...] = ()
    needs_whole_gpu: bool = False
    supervisor_pid: int | None = None
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
        """Inverse of :meth:`to_json`; unknown keys are ignored (older/newer orch)."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["gpus"] = tuple(kwargs.get("gpus", ()))
        return cls(**kwargs)


class StateStore:
    """The records and locks under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        """A store rooted at ``state_dir`` (created on first write)."""
        self.root = state_dir
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"

    def record_path(self, name: str) -> Path:
        """Where ``name``'s record lives."""
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """Where ``name``'s engine output goes."""
        return self.log_dir / f"{name}.log"

    def load(self, name: str) -> Record | None:
        """The record for ``name``, or None. A corrupt record counts as none."""
        try:
            data = json.loads(self.record_path(name).read_text())
            return Record.from_json(data)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, record: Record) -> None:
        """Write atomically (temp file + rename)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.record_path(record.name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    def remove(self, name: str) -> None:
        """Forget ``name`` (no error if it was not recorded)."""
        self.record_path(name).unlink(missing_ok=True)

    def all(self) -> list[Record]:
        """Every record, sorted by name."""
        if not self.run_dir.is_dir():
            return []
        out = []
        for path in sorted(self.run_dir.glob("*.json")):
            record = self.load(path.stem)
            if record is not None:
                out.append(record)
        return out

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold ``name``'s lock, or raise PreflightError if another orch holds it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise PreflightError(
                    f"{name}: another orch command (pid {holder}) is starting or stopping it; "
                    "wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)
