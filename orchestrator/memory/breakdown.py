"""Per-device memory breakdown shared by the llama.cpp and vLLM models."""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes one device needs, by category."""

    weights: int = 0
    kv: int = 0
    compute: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        """Sum of every category."""
        return self.weights + self.kv + self.compute + self.overhead

    def to_json(self) -> dict[str, int]:
        """The JSON shape ``orch estimate`` prints."""
        return {
            "weights": self.weights,
            "kv": self.kv,
            "compute": self.compute,
            "overhead": self.overhead,
            "total": self.total,
        }


@dataclass(frozen=True)
class MemoryEstimate:
    """What a configuration needs on every device, plus notes on how it was derived."""

    devices: dict[str, DeviceMemory]
    notes: tuple[str, ...] = ()
    facts: dict[str, int | float | str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """``{"devices": {"CUDA0": {...}, "CPU": {...}}, ...}`` in bytes."""
        return {
            "devices": {name: dev.to_json() for name, dev in self.devices.items()},
            "facts": dict(self.facts),
            "notes": list(self.notes),
        }


def mib(n_bytes: int | float) -> float:
    """Bytes to MiB."""
    return n_bytes / MIB


def gib(n_bytes: int | float) -> float:
    """Bytes to GiB."""
    return n_bytes / GIB
