"""ggml tensor types, upstream and ik_llama.cpp's own: id, name and storage size.

One table (``orchestrator/data/ggml-types.txt``, written by ``scripts/ggml-types.py`` from the
``gguf`` package and ik's gguf-py and ggml.c) serves both the GGUF reader (type ids) and the
memory model (sizes). Read here rather than imported from gguf, whose import costs ~175 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class GgmlType:
    """How many elements one block holds, how many bytes it takes, and bytes per row."""

    name: str
    block_elements: int
    block_bytes: int
    row_overhead_bytes: int = 0
    """ik_llama.cpp's ``row_meta_size``: a per-row scale some of its types keep."""
    type_id: int = -1
    engine: str = "both"
    """Which engines write it: ``upstream``, ``ik`` or ``both``."""

    def row_bytes(self, ne0: int) -> int:
        """Bytes of one row of ``ne0`` elements (a multiple of the block size)."""
        return ne0 // self.block_elements * self.block_bytes + self.row_overhead_bytes

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes for a tensor of ``shape`` (first dimension is the row)."""
        if not shape:
            return 0
        rows = 1
        for dim in shape[1:]:
            rows *= dim
        return self.row_bytes(shape[0]) * rows

    @property
    def bits_per_weight(self) -> float:
        """Average bits per element, ignoring per-row overhead."""
        return self.block_bytes * 8 / self.block_elements


def _load() -> tuple[dict[str, GgmlType], dict[int, GgmlType]]:
    text = resources.files("orchestrator.data").joinpath("ggml-types.txt").read_text("utf-8")
    by_name: dict[str, GgmlType] = {}
    by_id: dict[int, GgmlType] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        type_id, name, block, size, meta, engine = line.split()
        entry = GgmlType(name, int(block), int(size), int(meta), int(type_id), engine)
        by_name[name] = entry
        by_id[entry.type_id] = entry
    return by_name, by_id


GGML_TYPES, GGML_TYPES_BY_ID = _load()

# Types llama.cpp accepts for -ctk / -ctv.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def ggml_type(name: str) -> GgmlType:
    """Look a type up by its ggml name (case-insensitive)."""
    return GGML_TYPES[name.lower()]
