"""orch's GGUF header reader: the same answers as gguf's reader, and clear errors on bad files.

The hostile headers are written byte by byte; each must fail fast (no hang, no traceback)
with the file and the field named, through `orch estimate` as a user would meet it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.ggml_types import GGML_TYPES, GGML_TYPES_BY_ID
from orchestrator.memory.gguf_file import GgufError, read_gguf_file
from orchestrator.synthetic import SPECS, write_gguf

U32, U64, F32, STR, ARR = 4, 10, 6, 8, 9


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, kind: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", kind) + payload


def u32(key: str, value: int) -> bytes:
    return kv(key, U32, struct.pack("<I", value))


def tensor(name: str, shape: tuple[int, ...], type_id: int, offset: int = 0) -> bytes:
    dims = b"".join(struct.pack("<Q", d) for d in shape)
    return s(name) + struct.pack("<I", len(shape)) + dims + struct.pack("<IQ", type_id, offset)


def gguf_bytes(
    kvs: list[bytes],
    tensors: list[bytes],
    data: bytes = b"",
    *,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    version: int = 3,
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        n_tensors if n_tensors is not None else len(tensors),
        n_kv if n_kv is not None else len(kvs),
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    body += b"\x00" * (-len(body) % 32)
    return body + data


ARCH = [kv("general.architecture", STR, s("llama"))]
F32_4x8 = tensor("w", (8, 4), 0)

# (name, file bytes, field named in the message, problem text)
HOSTILE: list[tuple[str, bytes, str, str]] = [
    ("not gguf", b"GGML" + b"\x00" * 60, "header", "not the GGUF magic"),
    ("too short", b"GGUF\x03\x00", "", "too short for a GGUF header"),
    ("old version", gguf_bytes(ARCH, [], version=1), "version", "GGUF version 1 (supported: 2, 3)"),
    ("big endian", gguf_bytes(ARCH, [], version=3 << 24), "version", "big-endian"),
    (
        "absurd tensor count",
        gguf_bytes(ARCH, [], n_tensors=2**62),
        "tensor count",
        "tensor count 4,611,686,018,427,387,904 cannot fit",
    ),
    (
        "absurd kv count",
        gguf_bytes(ARCH, [], n_kv=2**40),
        "metadata count",
        "metadata count 1,099,511,627,776 cannot fit",
    ),
    (
        "absurd key length",
        gguf_bytes([struct.pack("<Q", 2**60) + b"x"], []),
        "metadata entry 0",
        "string length 1,152,921,504,606,846,976 is larger than",
    ),
    (
        "absurd string value",
        gguf_bytes([kv("general.name", STR, struct.pack("<Q", 2**50))], []),
        "general.name",
        "string length 1,125,899,906,842,624 is larger than",
    ),
    (
        "absurd array length",
        gguf_bytes([kv("tokenizer.ggml.scores", ARR, struct.pack("<IQ", F32, 2**61))], []),
        "tokenizer.ggml.scores",
        "array length 2,305,843,009,213,693,952 cannot fit",
    ),
    (
        "absurd string array",
        gguf_bytes([kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 2**59))], []),
        "tokenizer.ggml.tokens",
        "array length 576,460,752,303,423,488 cannot fit",
    ),
    (
        "unknown value type",
        gguf_bytes([kv("general.x", 77, b"\x00" * 8)], []),
        "general.x",
        "unknown value type 77",
    ),
    ("duplicate key", gguf_bytes([*ARCH, *ARCH], []), "general.architecture", "appears twice"),
    (
        "key not utf-8",
        gguf_bytes([s(b"\xff\xfe") + struct.pack("<I", U32) + b"\0\0\0\0"], []),
        "metadata entry 0",
        "not UTF-8",
    ),
    (
        "unknown type id",
        gguf_bytes(ARCH, [tensor("blk.0.attn_q.weight", (256, 4), 999)]),
        "tensor 'blk.0.attn_q.weight'",
        "unknown ggml type id 999",
    ),
    (
        "five dims",
        gguf_bytes(ARCH, [tensor("w", (1, 1, 1, 1, 1), 0)]),
        "tensor 'w'",
        "5 dimensions",
    ),
    (
        "row not a block multiple",
        gguf_bytes(ARCH, [tensor("w", (100, 4), 146)]),
        "tensor 'w'",
        "not a multiple of iq4_kss's block of 256",
    ),
    (
        "data past the end",
        gguf_bytes(ARCH, [F32_4x8], b"\x00" * 64),
        "tensor 'w'",
        "past the end of the file",
    ),
    (
        "unaligned offset",
        gguf_bytes(ARCH, [tensor("w", (8, 4), 0, offset=3)], b"\x00" * 256),
        "tensor 'w'",
        "not aligned to 32",
    ),
    (
        "cut in a tensor info",
        gguf_bytes(ARCH, [F32_4x8])[:-40],
        "tensor 'w'",
        "truncated or corrupt",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "field", "problem"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_header_is_a_clear_error(
    tmp_path: Path, name: str, content: bytes, field: str, problem: str
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    start = time.monotonic()
    with pytest.raises(GgufError) as caught:
        read_gguf_file(path)
    assert time.monotonic() - start < 2, "took too long: a count was trusted"
    assert caught.value.path == path
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_hostile_header_through_orch_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(HOSTILE[4][1])
    assert main(["estimate", str(path), "--", "-c", "512"]) == 4
    err = capsys.readouterr().err
    assert (
        f"{path}: not a readable GGUF file (tensor count: tensor count 4,611,686,018,427,387,904"
        in err
    )
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.gguf"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # opening it would block: the reader must not
    with pytest.raises(GgufError, match="not a regular file"):
        read_gguf_file(path)


def _model(path: Path, edit: Callable[[gguf.GGUFWriter], None], drop: str = "") -> Path:
    """A small llama GGUF written with gguf's own writer; ``edit`` adds or breaks keys."""
    writer = gguf.GGUFWriter(str(path), "llama")
    keys = {
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.block_count": 1,
        "llama.feed_forward_length": 128,
        "llama.context_length": 512,
    }
    for key, value in keys.items():
        if key != drop:
            writer.add_uint32(key, value)
    edit(writer)
    writer.add_tensor("token_embd.weight", np.zeros((32, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


ARCH_ERRORS = [
    (
        "head_count 0",
        lambda w: w.add_uint32("llama.attention.head_count", 0),
        "llama.attention.head_count",
        "is 0, must be at least 1",
    ),
    ("no embedding_length", lambda w: None, "llama.embedding_length", "missing"),
    (
        "block_count 0",
        lambda w: w.add_uint32("llama.block_count", 0),
        "llama.block_count",
        "is 0, must be at least 1",
    ),
    (
        "block_count a string",
        lambda w: w.add_string("llama.block_count", "many"),
        "llama.block_count",
        "expected an integer, got 'many'",
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "key", "problem"), ARCH_ERRORS, ids=[a[0] for a in ARCH_ERRORS]
)
def test_unusable_architecture_is_named(
    tmp_path: Path, name: str, edit: Callable[[gguf.GGUFWriter], None], key: str, problem: str
) -> None:
    drop = {
        "head_count 0": "llama.attention.head_count",
        "no embedding_length": "llama.embedding_length",
        "block_count 0": "llama.block_count",
        "block_count a string": "llama.block_count",
    }[name]
    path = _model(tmp_path / "m.gguf", edit, drop=drop)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "estimate", str(path), "--", "-c", "512"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stderr
    assert f"orch: error: {path}: cannot size this model: {key}: {problem}" in done.stderr
    assert "Traceback" not in done.stderr and "orch settings" not in done.stderr


def test_same_answers_as_gguf_reader(tmp_path: Path) -> None:
    path = write_gguf(SPECS["tiny-moe"], tmp_path / "m.gguf")
    mine = read_gguf_file(path)
    theirs = gguf.GGUFReader(str(path), "r")
    meta = {f.name: f.contents() for f in theirs.fields.values() if not f.name.startswith("GGUF.")}
    assert list(meta) == list(mine.metadata)
    for key, value in meta.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            assert np.allclose(value, np.asarray(mine.metadata[key])), key
        elif isinstance(value, float):
            assert value == pytest.approx(mine.metadata[key]), key
        else:
            assert mine.metadata[key] == value, key
    got = [
        (t.name, t.shape, t.ggml_type.name, t.nbytes, mine.data_offset + t.offset)
        for t in mine.tensors
    ]
    want = [
        (
            t.name,
            tuple(int(d) for d in t.shape),
            t.tensor_type.name.lower(),
            int(t.n_bytes),
            int(t.data_offset),
        )
        for t in theirs.tensors
    ]
    assert got == want


def test_one_table_for_both_engines() -> None:
    # ids are what files store; names what profiles and -ctk use
    assert GGML_TYPES_BY_ID[146] is GGML_TYPES["iq4_kss"]
    assert GGML_TYPES["iq4_kss"].engine == "ik" and GGML_TYPES["q4_k"].engine == "both"
    assert GGML_TYPES["nvfp4"].engine == "upstream"
    # IQ4_KS: 256 weights in 136 bytes plus a float scale per row
    assert GGML_TYPES["iq4_ks"].nbytes((4096, 8)) == 8 * (4096 // 256 * 136 + 4)
    for t in GGML_TYPES_BY_ID.values():
        assert GGML_TYPES[t.name] is t


def test_type_table_regenerates_unchanged(ik_llama: Path) -> None:
    from tests.conftest import REPO

    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "ggml-types.py"),
            "--check",
            "--ik-gguf-py",
            str(ik_llama / "gguf-py" / "gguf" / "constants.py"),
            "--ik-ggml-c",
            str(ik_llama / "src" / "ggml" / "src" / "ggml.c"),
            "--ik-version",
            ik_llama.name.rsplit("-", 1)[0],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
