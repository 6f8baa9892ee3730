#!/usr/bin/env python3
"""Regenerate orchestrator/data/ggml-types.txt: every ggml tensor type upstream and ik write.

    .venv/bin/python scripts/ggml-types.py           # write the shipped file
    .venv/bin/python scripts/ggml-types.py --check   # exit 1 with a diff if it differs

Sources: upstream's types and block sizes from the installed ``gguf`` package; ik_llama.cpp's
from its own gguf-py (``gguf-py/gguf/constants.py``) and, for the per-row metadata bytes its
gguf-py leaves out (``row_meta_size``: IQ4_KS keeps a float scale per row), from
``ggml/src/ggml.c``'s type_traits. Both ik files come with the ik build
(scripts/build-ik-llama.sh caches them next to its binaries); --ik-gguf-py / --ik-ggml-c
name others.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "orchestrator" / "data" / "ggml-types.txt"


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ik_gguf_constants", path)
    if spec is None or spec.loader is None:
        sys.exit(f"{path}: cannot load")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row_meta_sizes(ggml_c: str) -> dict[str, int]:
    """``GGML_TYPE_X`` name → ``row_meta_size`` from ik's type_traits table."""
    out: dict[str, int] = {}
    for match in re.finditer(r"\[GGML_TYPE_(\w+)\]\s*=\s*\{(.*?)\n\s*\},", ggml_c, re.S):
        meta = re.search(r"\.row_meta_size\s*=\s*(\d+)", match.group(2))
        out[match.group(1).upper()] = int(meta.group(1)) if meta else 0
    if not out:
        sys.exit("ggml.c: no type_traits entries found")
    return out


def ik_cache() -> Path:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-ik-llama.sh")], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"scripts/build-ik-llama.sh failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ik-gguf-py", type=Path, help="ik's gguf-py/gguf/constants.py")
    parser.add_argument("--ik-ggml-c", type=Path, help="ik's ggml/src/ggml.c")
    parser.add_argument("--ik-version", help="ik-llama-cpp-python version (header)")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()

    import gguf

    if args.ik_gguf_py is None or args.ik_ggml_c is None:
        cache = ik_cache()
        args.ik_gguf_py = args.ik_gguf_py or cache / "gguf-py" / "gguf" / "constants.py"
        args.ik_ggml_c = args.ik_ggml_c or cache / "src" / "ggml" / "src" / "ggml.c"
        args.ik_version = args.ik_version or cache.name.rsplit("-", 1)[0]
    ik = load_module(args.ik_gguf_py)
    meta = row_meta_sizes(args.ik_ggml_c.read_text(encoding="utf-8"))

    rows: dict[int, list[object]] = {}
    conflicts = []
    for t in gguf.GGMLQuantizationType:
        block, size = gguf.GGML_QUANT_SIZES[t]
        rows[int(t)] = [int(t), t.name.lower(), block, size, 0, "upstream"]
    for t in ik.GGMLQuantizationType:
        block, size = ik.GGML_QUANT_SIZES[t]
        row = [int(t), t.name.lower(), block, size, meta.get(t.name.upper(), 0), "ik"]
        known = rows.get(int(t))
        if known is None:
            rows[int(t)] = row
        elif known[1:5] == row[1:5]:
            known[5] = "both"
        else:  # the same id, sized differently: upstream's stays, ik's is noted
            known[5] = "both"
            conflicts.append(f"{row[1]} ({row[0]}): upstream {known[2:5]}, ik {row[2:5]}")

    header = [
        f"ggml tensor types: upstream from gguf {importlib.metadata.version('gguf')}, "
        f"ik_llama.cpp from ik-llama-cpp-python {args.ik_version or 'unknown'}",
        "(its gguf-py, and row_meta_size from its ggml/src/ggml.c); by scripts/ggml-types.py",
        "columns: id name block_elements block_bytes row_meta_bytes engine",
        "a tensor row takes ne0 / block_elements * block_bytes + row_meta_bytes bytes",
        *(f"same id, different size (upstream's kept): {c}" for c in conflicts),
    ]
    lines = [f"# {h}" for h in header]
    lines += [" ".join(str(v) for v in rows[i]) for i in sorted(rows)]
    text = "\n".join(lines) + "\n"
    if args.check:
        shipped = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if shipped != text:
            diff = difflib.unified_diff(
                shipped.splitlines(), text.splitlines(), str(TARGET), "regenerated", lineterm=""
            )
            print("\n".join(diff))
            return 1
        print(f"{TARGET}: up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"{TARGET}: {len(rows)} types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
