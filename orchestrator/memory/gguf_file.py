"""A GGUF header reader that knows every upstream and ik_llama.cpp tensor type.

``gguf.GGUFReader`` stops at type ids its enum lacks (ik's IQ4_KS = 144, ...) and maps the
whole file; this reads only the header (metadata and tensor infos) through the type table of
``orchestrator.ggml_types``, and checks every count, length and offset against the file's
size first, so a hostile or truncated header fails with the file and field named.
"""

from __future__ import annotations

import mmap
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from orchestrator.ggml_types import GGML_TYPES_BY_ID, GgmlType

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_NESTING = 4
"""Arrays of arrays deeper than this are refused (nothing real nests at all)."""

_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "uint8"),
    1: ("<b", "int8"),
    2: ("<H", "uint16"),
    3: ("<h", "int16"),
    4: ("<I", "uint32"),
    5: ("<i", "int32"),
    6: ("<f", "float32"),
    7: ("<?", "bool"),
    10: ("<Q", "uint64"),
    11: ("<q", "int64"),
    12: ("<d", "float64"),
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


class GgufError(ValueError):
    """A GGUF file orch cannot read; the message names the file and the field."""

    def __init__(self, path: Path, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GgmlType
    offset: int
    """From the start of the file's tensor data."""

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data."""
        return self.ggml_type.nbytes(self.shape)


@dataclass(frozen=True)
class GgufFile:
    """The header of one GGUF file."""

    path: Path
    version: int
    metadata: dict[str, object]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    """Where tensor data starts (aligned)."""
    size: int


class _Cursor:
    """Reads little-endian values from a buffer, refusing to run past its end."""

    def __init__(self, path: Path, data: mmap.mmap | bytes) -> None:
        self.path = path
        self.data = data
        self.pos = 0
        self.field = "header"

    def fail(self, problem: str) -> GgufError:
        return GgufError(self.path, self.field, problem)

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int) -> bytes:
        if count > self.left():
            raise self.fail(
                f"needs {count:,} bytes at offset {self.pos:,}, the file has "
                f"{max(self.left(), 0):,} left (truncated or corrupt)"
            )
        out = self.data[self.pos : self.pos + count]
        self.pos += count
        return bytes(out)

    def scalar(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        value: int | float | bool = struct.unpack(fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return int(self.scalar("<I"))

    def u64(self) -> int:
        return int(self.scalar("<Q"))

    def count(self, what: str, min_bytes_each: int) -> int:
        """A u64 count of things that take at least ``min_bytes_each`` bytes each."""
        value = self.u64()
        if value * min_bytes_each > self.left():
            raise self.fail(
                f"{what} {value:,} cannot fit in the {self.left():,} bytes left (corrupt header)"
            )
        return value

    def string(self) -> str:
        length = self.u64()
        if length > self.left():
            raise self.fail(
                f"string length {length:,} is larger than the {self.left():,} bytes left "
                "(corrupt header)"
            )
        raw = self.take(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"string is not UTF-8 ({exc.reason} at byte {exc.start})") from None

    def strings(self, n: int) -> list[str]:
        """``n`` strings in a row (a vocabulary: hundreds of thousands, so one tight loop)."""
        data, pos, end = self.data, self.pos, len(self.data)
        length_at = _U64.unpack_from
        out: list[str] = []
        try:
            for _ in range(n):
                (length,) = length_at(data, pos)
                pos += 8
                if pos + length > end:
                    raise self.fail(f"string {len(out)} of length {length:,} runs past the end")
                out.append(data[pos : pos + length].decode("utf-8"))
                pos += length
        except struct.error:
            raise self.fail(f"string {len(out)} runs past the end of the file") from None
        except UnicodeDecodeError as exc:
            raise self.fail(f"string {len(out)} is not UTF-8 ({exc.reason})") from None
        self.pos = pos
        return out

    def value(self, kind: int, depth: int = 0) -> object:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind][0])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if depth >= MAX_NESTING:
                raise self.fail(f"arrays nested deeper than {MAX_NESTING}")
            inner = self.u32()
            if inner in _SCALARS:
                fmt = _SCALARS[inner][0]
                size = struct.calcsize(fmt)
                n = self.count("array length", size)
                return list(struct.unpack(f"<{n}{fmt[1]}", self.take(n * size)))
            if inner == _STRING:
                return self.strings(self.count("array length", 8))
            n = self.count("array length", 8 if inner == _ARRAY else 1)
            return [self.value(inner, depth + 1) for _ in range(n)]
        raise self.fail(f"unknown value type {kind}")


def _regular_file_size(path: Path) -> int:
    try:
        info = path.stat()
    except OSError as exc:
        raise GgufError(path, "", f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise GgufError(path, "", "not a regular file")
    return info.st_size


def read_gguf_file(path: Path) -> GgufFile:
    """Read the header of one GGUF file (the tensor data is never read)."""
    size = _regular_file_size(path)
    if size < 24:
        raise GgufError(path, "", f"{size} bytes is too short for a GGUF header")
    with path.open("rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if hasattr(mmap, "MADV_SEQUENTIAL"):
                data.madvise(mmap.MADV_SEQUENTIAL)
            return _parse(path, data, size)
        finally:
            data.close()


def _parse(path: Path, data: mmap.mmap, size: int) -> GgufFile:
    cur = _Cursor(path, data)
    magic = cur.take(4)
    if magic != MAGIC:
        raise cur.fail(f"starts with {magic!r}, not the GGUF magic {MAGIC!r}")
    cur.field = "version"
    version = cur.u32()
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (2, 3):
            raise cur.fail("a big-endian GGUF file; only little-endian files are supported")
        raise cur.fail(f"GGUF version {version} (supported: 2, 3)")
    cur.field = "tensor count"
    n_tensors = cur.count("tensor count", 24)
    cur.field = "metadata count"
    n_kv = cur.count("metadata count", 13)

    metadata: dict[str, object] = {}
    for index in range(n_kv):
        cur.field = f"metadata entry {index}"
        key = cur.string()
        cur.field = key
        kind = cur.u32()
        value = cur.value(kind)
        if key in metadata:
            raise cur.fail("appears twice in the metadata")
        metadata[key] = value

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        raise GgufError(path, "general.alignment", f"{alignment!r} is not a positive integer")
    if alignment & (alignment - 1):
        raise GgufError(path, "general.alignment", f"{alignment} is not a power of two")

    infos: list[tuple[str, tuple[int, ...], GgmlType, int]] = []
    names: set[str] = set()
    for index in range(n_tensors):
        cur.field = f"tensor {index}"
        name = cur.string()
        cur.field = f"tensor {name!r}"
        if name in names:
            raise cur.fail("appears twice")
        names.add(name)
        n_dims = cur.u32()
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"{n_dims} dimensions (ggml has 1 to {MAX_DIMS})")
        shape = tuple(cur.u64() for _ in range(n_dims))
        type_id = cur.u32()
        ggml_type = GGML_TYPES_BY_ID.get(type_id)
        if ggml_type is None:
            raise cur.fail(
                f"unknown ggml type id {type_id} (neither upstream nor ik_llama.cpp has it)"
            )
        if shape[0] % ggml_type.block_elements:
            raise cur.fail(
                f"row of {shape[0]} elements is not a multiple of {ggml_type.name}'s block of "
                f"{ggml_type.block_elements}"
            )
        offset = cur.u64()
        if offset % alignment:
            raise cur.fail(f"data offset {offset} is not aligned to {alignment}")
        infos.append((name, shape, ggml_type, offset))

    data_offset = -(-cur.pos // alignment) * alignment
    room = size - data_offset
    tensors = []
    for name, shape, ggml_type, offset in infos:
        nbytes = ggml_type.nbytes(shape)
        if offset + nbytes > room:
            raise GgufError(
                path,
                f"tensor {name!r}",
                f"{ggml_type.name} {list(shape)} takes {nbytes:,} bytes at data offset "
                f"{offset:,}, past the end of the file ({room:,} bytes of data; truncated?)",
            )
        tensors.append(TensorInfo(name, shape, ggml_type, offset))
    return GgufFile(path, version, metadata, tuple(tensors), data_offset, size)
