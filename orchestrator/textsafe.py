r"""Text that reaches a terminal or a generated file: control characters made visible.

A GGUF's name, a file name or a profile value can hold escape sequences (``ESC ]0;...``,
``ESC [2J``), carriage returns or bidirectional overrides that rewrite what a terminal shows,
and newlines that start a new line in a generated file. :func:`escape_controls` turns each
into a visible ``\xNN`` / ``\uNNNN`` escape, keeping the newlines and tabs it is told to.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

_INVISIBLE = frozenset(
    ["\u2028", "\u2029", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
)
"""Line separators and bidirectional overrides: they split or reorder what a reader sees."""


def is_unsafe(char: str) -> bool:
    """Whether ``char`` is a control character (C0, DEL, C1) or an invisible reorderer."""
    return unicodedata.category(char) == "Cc" or char in _INVISIBLE


def escape_controls(text: str, keep: str = "\n\t") -> str:
    """``text`` with every unsafe character but those in ``keep`` as a visible escape."""
    if text.isprintable() or not any(is_unsafe(c) and c not in keep for c in text):
        return text
    out = []
    for char in text:
        if char in keep or not is_unsafe(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


class StreamEscaper:
    """Escapes a byte stream (an engine's log) chunk by chunk; UTF-8 split across chunks is fine.

    Bytes that are not UTF-8 pass through unchanged unless they are C1 control bytes.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """The escaped form of ``chunk`` (what it completes of earlier ones included)."""
        text = self._decoder.decode(chunk, final)
        safe = _C1_BYTES.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", escape_controls(text))
        return safe.encode("utf-8", errors="surrogateescape")


_C1_BYTES = re.compile("[\udc80-\udc9f]")
"""Bytes 0x80-0x9f outside UTF-8, as surrogateescape decodes them: 8-bit C1 controls."""
