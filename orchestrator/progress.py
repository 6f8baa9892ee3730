"""Load progress: bytes of weights an engine has read, against the plan's weights.

An engine reads its weights either with ``read()`` (``--no-mmap``, and vLLM's loaders) or by
touching an mmapped file. The first shows in ``/proc/PID/io`` as ``rchar``, the second in
``/proc/PID/smaps`` as the resident size of the weight files' mappings (``.gguf``,
``.safetensors``); the process's whole ``RssFile`` would also count its own binary and
libraries, tens of MB that a small model's figure would be all made of. The larger of the
two, summed over the engine's processes and capped at the plan's weights, is the progress
figure. The arithmetic
(:class:`Meter`) is pure; only :func:`bytes_loaded` and :func:`activity_of` read ``/proc``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.runtime import Handle
from orchestrator.runtime import process as process_rt

RATE_WINDOW_S = 5.0
"""The rate is measured over this many seconds of samples."""


@dataclass(frozen=True)
class LoadProgress:
    """One progress sample."""

    loaded_bytes: int
    total_bytes: int
    elapsed_s: float
    rate_bytes_s: float | None
    eta_s: float | None

    @property
    def fraction(self) -> float:
        """Share of the weights read, 0..1 (1 when the plan has no weights)."""
        if self.total_bytes <= 0:
            return 1.0
        return min(self.loaded_bytes / self.total_bytes, 1.0)

    def to_json(self) -> dict[str, float | int | None]:
        """For the gateway's status JSON."""
        return {
            "loaded_bytes": self.loaded_bytes,
            "total_bytes": self.total_bytes,
            "fraction": round(self.fraction, 4),
            "elapsed_s": round(self.elapsed_s, 2),
            "rate_bytes_s": None if self.rate_bytes_s is None else round(self.rate_bytes_s),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
        }


class Meter:
    """Turns (elapsed, bytes) samples into progress with a windowed rate and an ETA."""

    def __init__(self, total_bytes: int, window_s: float = RATE_WINDOW_S) -> None:
        """A meter for a load of ``total_bytes``."""
        self.total = total_bytes
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, loaded_bytes: int, elapsed_s: float) -> LoadProgress:
        """Record one reading; the rate covers the last ``window_s`` seconds of readings."""
        loaded = min(max(loaded_bytes, 0), self.total) if self.total > 0 else max(loaded_bytes, 0)
        self._samples.append((elapsed_s, loaded))
        while len(self._samples) > 2 and elapsed_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        rate = (loaded - b0) / (elapsed_s - t0) if elapsed_s > t0 else None
        if rate is not None and rate <= 0:
            rate = None
        eta = (self.total - loaded) / rate if rate and self.total > loaded else None
        if self.total > 0 and loaded >= self.total:
            eta = 0.0
        return LoadProgress(loaded, self.total, elapsed_s, rate, eta)


def _rchar(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt")


def _weights_rss(pid: int) -> int:
    """Resident bytes of the process's mappings of weight files."""
    total = 0
    counting = False
    try:
        with Path(f"/proc/{pid}/smaps").open() as smaps:
            for line in smaps:
                if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's first line
                    fields = line.split(maxsplit=5)
                    counting = len(fields) == 6 and fields[5].rstrip().endswith(WEIGHT_SUFFIXES)
                elif counting and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return total
    return total


def bytes_loaded(pids: list[int]) -> int:
    """Bytes the processes have read (``rchar``) or mapped in from weight files, the larger."""
    return max(sum(_rchar(p) for p in pids), sum(_weights_rss(p) for p in pids))


def activity_of(handle: Handle) -> Callable[[], Hashable] | None:
    """Something that changes when the engine writes to its log (for a prompt readiness poll).

    Engines log the end of loading; noticing the write lets readiness be polled at once
    instead of after a back-off. Only a process's log is a plain file here.
    """
    if not isinstance(handle, process_rt.ProcessHandle):
        return None
    path = handle.log_path

    def size() -> Hashable:
        try:
            return path.stat().st_size
        except OSError:
            return None

    return size
