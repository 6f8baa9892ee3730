"""What an engine's server accepts: its flags, each with its alias spellings and its values.

A catalogue file (``orchestrator/data/flags-ENGINE.txt``) holds one flag per line: its
spellings, the one the engine documents first, then the names of the values it takes (none for
a switch), then ``(hidden)`` when the engine's parser takes the flag but the ``--help`` of the
build the catalogue was read from does not list it::

    # comment lines start with '#'
    --ctx-size -c N
    --gpu-layers -ngl --n-gpu-layers N
    --control-vector-layer-range START END
    --cpu-moe -cmoe
    --override-tensor -ot VALUE (hidden)

``scripts/flag-catalogue.py`` regenerates the files from the real engines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

FLAG = re.compile(r"--?[A-Za-z][\w.-]*")
"""One flag spelling: ``-c``, ``--ctx-size``, ``--fim-qwen-1.5b-default``."""
VALUE = re.compile(r"[A-Z][A-Z0-9_]*")
"""The name of one value a flag takes: ``N``, ``FNAME``, ``VALUE``."""
HIDDEN = "(hidden)"


@dataclass(frozen=True)
class Flag:
    """One flag: every spelling (the documented one first) and the values it takes."""

    spellings: tuple[str, ...]
    values: tuple[str, ...] = ()
    hidden: bool = False
    """The parser takes it; the ``--help`` the catalogue was read from does not list it."""

    @property
    def canonical(self) -> str:
        """The spelling the engine documents."""
        return self.spellings[0]

    def line(self) -> str:
        """The catalogue line of this flag."""
        return " ".join((*self.spellings, *self.values, *((HIDDEN,) if self.hidden else ())))


@dataclass(frozen=True)
class FlagCatalogue:
    """The flags of one engine; the first spelling of each is its canonical one."""

    flags: tuple[Flag, ...]
    _by_spelling: dict[str, Flag] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_spelling: dict[str, Flag] = {}
        for flag in self.flags:
            for spelling in flag.spellings:
                by_spelling.setdefault(spelling, flag)
        object.__setattr__(self, "_by_spelling", by_spelling)

    @classmethod
    def parse(cls, text: str) -> FlagCatalogue:
        """Parse catalogue text (see the module docstring)."""
        flags = []
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            hidden = words[-1] == HIDDEN
            if hidden:
                words = words[:-1]
            spellings = [w for w in words if FLAG.fullmatch(w)]
            values = words[len(spellings) :]
            bad = [w for w in values if not VALUE.fullmatch(w)]
            if not spellings or words[: len(spellings)] != spellings or bad:
                what = bad[0] if bad else words[0]
                raise ValueError(f"catalogue line {line!r}: {what!r} is not a flag")
            flags.append(Flag(tuple(spellings), tuple(values), hidden))
        return cls(tuple(flags))

    def render(self, header: Iterable[str] = ()) -> str:
        """The file text: ``header`` lines as comments, then one flag per line."""
        lines = [f"# {h}".rstrip() for h in header]
        lines += [flag.line() for flag in self.flags]
        return "\n".join(lines) + "\n"

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The spellings of every flag."""
        return tuple(flag.spellings for flag in self.flags)

    @property
    def spellings(self) -> frozenset[str]:
        """Every spelling of every flag."""
        return frozenset(self._by_spelling)

    def get(self, spelling: str) -> Flag | None:
        """The flag ``spelling`` (``=value`` allowed) is a spelling of, if any."""
        return self._by_spelling.get(spelling.split("=", 1)[0])

    def accepts(self, flag: str) -> bool:
        """Whether ``flag`` (``=value`` allowed) is a spelling the engine takes."""
        return self.get(flag) is not None

    def canonical(self, flag: str) -> str:
        """The documented spelling of ``flag`` (``=value`` kept); unknown flags are unchanged."""
        found = self.get(flag)
        if found is None:
            return flag
        _, eq, value = flag.partition("=")
        return found.canonical + eq + value

    def aliases(self, flag: str) -> tuple[str, ...]:
        """Every spelling of the flag ``flag`` is one of (just ``flag`` when unknown)."""
        found = self.get(flag)
        return found.spellings if found else (flag,)

    def value_count(self, flag: str) -> int:
        """How many values follow the flag (0 for a switch or an unknown flag)."""
        found = self.get(flag)
        return len(found.values) if found else 0


@cache
def load_catalogue(engine_kind: str) -> FlagCatalogue:
    """The shipped catalogue of ``llama.cpp``, ``ik_llama.cpp`` or ``vllm``."""
    name = f"flags-{engine_kind}.txt"
    text = resources.files("orchestrator.data").joinpath(name).read_text(encoding="utf-8")
    return FlagCatalogue.parse(text)
