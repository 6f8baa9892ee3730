"""What an engine's server accepts: flag spellings grouped into aliases.

A catalogue file (``orchestrator/data/flags-ENGINE.txt``) holds one flag per line, its alias
spellings after it on the same line, the spelling the engine documents first::

    # comment lines start with '#'
    --ctx-size -c
    --n-gpu-layers -ngl --gpu-layers

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


@dataclass(frozen=True)
class FlagCatalogue:
    """Alias groups of one engine; the first spelling of a group is its canonical one."""

    groups: tuple[tuple[str, ...], ...]
    _canonical: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        canonical: dict[str, str] = {}
        for group in self.groups:
            for spelling in group:
                canonical.setdefault(spelling, group[0])
        object.__setattr__(self, "_canonical", canonical)

    @classmethod
    def parse(cls, text: str) -> FlagCatalogue:
        """Parse catalogue text (see the module docstring)."""
        groups = []
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            bad = [w for w in words if not FLAG.fullmatch(w)]
            if bad:
                raise ValueError(f"catalogue line {line!r}: {bad[0]!r} is not a flag")
            groups.append(tuple(words))
        return cls(tuple(groups))

    def render(self, header: Iterable[str] = ()) -> str:
        """The file text: ``header`` lines as comments, then one group per line."""
        lines = [f"# {h}" for h in header]
        lines += [" ".join(g) for g in self.groups]
        return "\n".join(lines) + "\n"

    @property
    def spellings(self) -> frozenset[str]:
        """Every spelling of every flag."""
        return frozenset(self._canonical)

    def accepts(self, flag: str) -> bool:
        """Whether ``flag`` (``=value`` allowed) is a spelling the engine takes."""
        return flag.split("=", 1)[0] in self._canonical

    def canonical(self, flag: str) -> str:
        """The documented spelling of ``flag``; unknown flags are returned unchanged."""
        return self._canonical.get(flag, flag)

    def aliases(self, flag: str) -> tuple[str, ...]:
        """Every spelling of the flag ``flag`` is one of (just ``flag`` when unknown)."""
        canonical = self.canonical(flag)
        for group in self.groups:
            if group[0] == canonical:
                return group
        return (flag,)


@cache
def load_catalogue(engine_kind: str) -> FlagCatalogue:
    """The shipped catalogue of ``llama.cpp``, ``ik_llama.cpp`` or ``vllm``."""
    name = f"flags-{engine_kind}.txt"
    text = resources.files("orchestrator.data").joinpath(name).read_text(encoding="utf-8")
    return FlagCatalogue.parse(text)
