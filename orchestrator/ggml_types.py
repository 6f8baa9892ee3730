"""Storage sizes of ggml tensor types, upstream and ik_llama.cpp's own."""

from __future__ import annotations

from dataclasses import dataclass

from gguf.constants import GGML_QUANT_SIZES


@dataclass(frozen=True)
class GgmlType:
    """How many elements one block holds and how many bytes it takes."""

    name: str
    block_elements: int
    block_bytes: int
    row_overhead_bytes: int = 0

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes for a tensor of ``shape`` (first dimension is the row)."""
        elements = 1
        for dim in shape:
            elements *= dim
        rows = elements // shape[0] if shape and shape[0] else 0
        return elements * self.block_bytes // self.block_elements + rows * self.row_overhead_bytes

    @property
    def bits_per_weight(self) -> float:
        """Average bits per element, ignoring per-row overhead."""
        return self.block_bytes * 8 / self.block_elements


def _upstream() -> dict[str, GgmlType]:
    table = {}
    for qtype, (block_elements, block_bytes) in GGML_QUANT_SIZES.items():
        name = qtype.name.lower()
        table[name] = GgmlType(name, block_elements, block_bytes)
    return table


# ik_llama.cpp's own quants (block of 256 plus a per-row scale where the format has one).
_IK_LLAMA = {
    "iq2_ks": GgmlType("iq2_ks", 256, 70, 2),
    "iq2_k": GgmlType("iq2_k", 256, 76),
    "iq3_ks": GgmlType("iq3_ks", 256, 102, 2),
    "iq3_k": GgmlType("iq3_k", 256, 110),
    "iq4_kss": GgmlType("iq4_kss", 256, 128, 4),
    "iq4_ks": GgmlType("iq4_ks", 256, 136, 4),
    "iq4_k": GgmlType("iq4_k", 256, 144),
    "iq5_ks": GgmlType("iq5_ks", 256, 168, 4),
    "iq5_k": GgmlType("iq5_k", 256, 176),
    "iq6_k": GgmlType("iq6_k", 256, 212),
    "q8_kv": GgmlType("q8_kv", 1, 1, 8),
}

GGML_TYPES: dict[str, GgmlType] = {**_upstream(), **_IK_LLAMA}

# Types llama.cpp accepts for -ctk / -ctv.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def ggml_type(name: str) -> GgmlType:
    """Look a type up by its ggml name (case-insensitive)."""
    return GGML_TYPES[name.lower()]
