"""ik_llama.cpp as a real component: its quantized files, its server, its memory.

Files come from ik's own llama-quantize (tests/conftest.py ``ik_ggufs``), the server is ik's
CPU build (``ik_llama``); a missing build fails these tests with how to get it.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from orchestrator.cli import main
from orchestrator.memory.gguf_file import read_gguf_file
from orchestrator.memory.tensors import read_gguf

IK_TYPES = {"iq4_kss", "iq4_ks", "iq4_k", "iq3_ks"}


@pytest.mark.parametrize("recipe", ["iq4_kss-mix", "iq3_ks"])
def test_ik_types_read_exactly(ik_ggufs: dict[str, Path], recipe: str) -> None:
    """Every tensor's size, from orch's type table, is the span ik's quantizer wrote for it."""
    path = ik_ggufs[recipe]
    with pytest.raises(ValueError, match="is not a valid GGMLQuantizationType"):
        gguf.GGUFReader(str(path))  # what orch used before: upstream's enum only
    header = read_gguf_file(path)
    types = {t.ggml_type.name for t in header.tensors}
    assert types & IK_TYPES, types
    if recipe == "iq4_kss-mix":
        assert {"iq4_kss", "iq4_ks", "iq4_k", "q8_0"} <= types
    alignment = int(header.metadata.get("general.alignment", 32))  # type: ignore[call-overload]
    by_offset = sorted(header.tensors, key=lambda t: t.offset)
    for tensor, following in zip(by_offset, by_offset[1:], strict=False):
        padding = following.offset - tensor.offset - tensor.nbytes
        assert 0 <= padding < alignment, (tensor.name, tensor.ggml_type.name, padding)
    last = by_offset[-1]
    assert header.data_offset + last.offset + last.nbytes == path.stat().st_size


@pytest.mark.parametrize("recipe", ["iq4_kss-mix", "iq3_ks"])
def test_orch_estimate_reports_ik_weights_exactly(
    ik_ggufs: dict[str, Path], recipe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ik_ggufs[recipe]
    exact = sum(t.nbytes for t in read_gguf(path).tensors)
    args = ["-c", "512", "--no-mmap", "-np", "1"]
    assert main(["estimate", str(path), "--engine", "ik_llama.cpp", "--json", "--", *args]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    assert devices["CPU"]["weights"] == exact
