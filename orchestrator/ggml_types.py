"""Storage sizes of ggml tensor types, upstream and ik_llama.cpp's own."""

from __future__ import annotations

from dataclasses import dataclass


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


# (elements per block, bytes per block), as ggml's type_traits (ggml/src/ggml.c) define them.
# Kept here rather than imported from gguf, whose import costs ~175 ms on every command.
_UPSTREAM_SIZES = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "f64": (1, 8),
    "i8": (1, 1), "i16": (1, 2), "i32": (1, 4), "i64": (1, 8),
    "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
    "q8_0": (32, 34), "q8_1": (32, 40), "q1_0": (128, 18),
    "q2_k": (256, 84), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176),
    "q6_k": (256, 210), "q8_k": (256, 292),
    "iq2_xxs": (256, 66), "iq2_xs": (256, 74), "iq2_s": (256, 82),
    "iq3_xxs": (256, 98), "iq3_s": (256, 110), "iq1_s": (256, 50), "iq1_m": (256, 56),
    "iq4_nl": (32, 18), "iq4_xs": (256, 136),
    "tq1_0": (256, 54), "tq2_0": (256, 66), "mxfp4": (32, 17), "nvfp4": (64, 36),
}  # fmt: skip


def _upstream() -> dict[str, GgmlType]:
    return {name: GgmlType(name, b, s) for name, (b, s) in _UPSTREAM_SIZES.items()}


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
