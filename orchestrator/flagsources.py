"""Flag catalogues from what the engines say about themselves. Pure: text in, flags out.

``scripts/flag-catalogue.py`` runs the engines and hands their output here:

- upstream llama.cpp: its ``--help`` lists every flag its parser takes, one entry per flag
  (``-kvu, --kv-unified, -no-kvu, --no-kv-unified``: the switch, then its negation);
- ik_llama.cpp: its parser is ``gpt_params_find_arg`` in ``common/common.cpp`` (one
  ``if (arg == "-c" || arg == "--ctx-size")`` per flag, one ``CHECK_ARG`` or ``argv[++i]``
  per value), and its ``--help`` leaves some of those out (the GPU options in a CPU build,
  ``-ot``); the help and the option list in the same source give the documented spellings;
- vLLM: the actions of its ``vllm serve`` argument parser.

The canonical spelling of a flag is the first long one its help entry lists (else its first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.flagcatalogue import FLAG, VALUE, Flag, FlagCatalogue

_SPELLING = re.compile(r"(--?[A-Za-z][\w.-]*)(,\s*)?")
_NEGATED = re.compile(r"--?no-")


@dataclass(frozen=True)
class HelpEntry:
    """One option as a help text documents it: spellings in order, and its value hint."""

    spellings: tuple[str, ...]
    hint: str = ""


def _entry(spec: str) -> HelpEntry | None:
    """``-c,    --ctx-size N    help...`` → spellings and hint (the help after 2+ spaces)."""
    spellings: list[str] = []
    pos = 0
    while True:
        match = _SPELLING.match(spec, pos)
        if match is None:
            break
        spellings.append(match.group(1))
        pos = match.end()
        if not match.group(2):
            break
    if not spellings:
        return None
    # ik lists a few aliases without the comma: "-cram-n-min --cache-ram-n-min N"
    while match := re.match(r" (--?[A-Za-z][\w.-]*)(?= |$)", spec[pos:]):
        spellings.append(match.group(1))
        pos += match.end()
    rest = spec[pos:]
    hint = ""
    if rest.startswith(" ") and not rest.startswith("  "):
        hint = re.split(r"\s{2,}", rest.strip(), maxsplit=1)[0]
    return HelpEntry(tuple(spellings), hint)


def help_entries(text: str, indent: int = 0) -> list[HelpEntry]:
    """Option entries of a help text whose entries start at column ``indent`` (or up to 7 more).

    Continuation lines (the help of an entry) are indented further and are skipped.
    """
    out = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        depth = len(line) - len(stripped)
        if not (indent <= depth <= indent + 7) or not re.match(r"--?[A-Za-z]", stripped):
            continue
        entry = _entry(stripped)
        if entry is not None:
            out.append(entry)
    return out


def split_negation(spellings: Sequence[str]) -> list[tuple[str, ...]]:
    """``-kvu --kv-unified -no-kvu --no-kv-unified`` → the switch and its negation.

    A help entry lists a switch's spellings, then its negation's. The negation starts after
    the last long spelling ``--X`` whose ``--no-X`` the entry also lists.
    """
    names = set(spellings)
    cut = None
    for i, spelling in enumerate(spellings):
        if spelling.startswith("--") and not _NEGATED.match(spelling):
            if "--no-" + spelling[2:] in names:
                cut = i + 1
    if cut is None or cut == len(spellings):
        return [tuple(spellings)]
    return [tuple(spellings[:cut]), tuple(spellings[cut:])]


def documented_order(spellings: Sequence[str]) -> tuple[str, ...]:
    """The spellings with the canonical one (the first long one) first."""
    first_long = next((s for s in spellings if s.startswith("--")), spellings[0])
    return (first_long, *(s for s in spellings if s != first_long))


def value_names(hint: str, count: int | None = None) -> tuple[str, ...]:
    """Names of the values a hint stands for: ``N`` → (N,); ``START END`` → (START, END).

    A hint that is not plain upper-case names (``[on|off|auto]``, ``<pattern>=<type>,...``)
    is one value, ``VALUE``. ``count`` (from a parser) overrides the hint's count.
    """
    if not hint:
        names: tuple[str, ...] = ()
    else:
        words = hint.split()
        names = tuple(words) if all(VALUE.fullmatch(w) for w in words) else ("VALUE",)
    if count is not None and len(names) != count:
        names = ("VALUE",) * count
    return names


def _sort_key(flag: Flag) -> tuple[str, str]:
    return (flag.canonical.lstrip("-").lower(), flag.canonical)


def catalogue(flags: Iterable[Flag]) -> FlagCatalogue:
    """Flags sorted by canonical spelling, each spelling in one flag only."""
    seen: set[str] = set()
    kept = []
    for flag in sorted(flags, key=_sort_key):
        spellings = tuple(s for s in flag.spellings if s not in seen)
        if not spellings:
            continue
        seen.update(spellings)
        if spellings != flag.spellings:
            flag = Flag(spellings, flag.values, flag.hidden)
        kept.append(flag)
    return FlagCatalogue(tuple(kept))


# ---------------------------------------------------------------- upstream llama.cpp


def llama_cpp_flags(help_text: str) -> FlagCatalogue:
    """Upstream llama-server's flags from its ``--help`` (entries start at column 0)."""
    flags = []
    for entry in help_entries(help_text):
        groups = split_negation(entry.spellings)
        for n, group in enumerate(groups):
            hint = entry.hint if n == 0 else ""  # a negation takes no value
            flags.append(Flag(documented_order(group), value_names(hint)))
    return catalogue(flags)


# ---------------------------------------------------------------- ik_llama.cpp

_FIND_ARG = re.compile(r"^bool gpt_params_find_arg\(.*?\{\n(?P<body>.*?)^\}", re.M | re.S)
_IF_ARG = re.compile(
    r'^\s*(?:else\s+)?if \((arg == "[^"]+"(?:\s*\|\|\s*arg == "[^"]+")*)\s*\)\s*\{', re.M
)
_OPTION = re.compile(r'options\.push_back\(\s*\{\s*"[^"]*",\s*"([^"]*)"')


@dataclass(frozen=True)
class ParsedFlag:
    """A flag as a parser takes it: every spelling it compares with, and its value count."""

    spellings: tuple[str, ...]
    values: int


def _block(body: str, start: int) -> str:
    """The text of the ``{...}`` block whose ``{`` is at ``start``."""
    depth = 0
    for i in range(start, len(body)):
        if body[i] == "{":
            depth += 1
        elif body[i] == "}":
            depth -= 1
            if depth == 0:
                return body[start : i + 1]
    raise ValueError("unbalanced braces in gpt_params_find_arg")


def ik_parser_flags(source: str) -> list[ParsedFlag]:
    """The flags ``gpt_params_find_arg`` (ik's ``common/common.cpp``) takes, in source order."""
    found = _FIND_ARG.search(source)
    if found is None:
        raise ValueError("common.cpp: no gpt_params_find_arg function")
    body = found.group("body")
    out = []
    for match in _IF_ARG.finditer(body):
        spellings = tuple(re.findall(r'arg == "([^"]+)"', match.group(1)))
        block = _block(body, match.end() - 1)
        # a value is taken by CHECK_ARG, by argv[++i] or by an `if (++i >= argc)` check
        taken = block.count("CHECK_ARG") + len(re.findall(r"argv\[\+\+i\]|\+\+i >= argc", block))
        out.append(ParsedFlag(spellings, taken))
    return out


_LOG_PARSERS = {"log_param_single_parse": 0, "log_param_pair_parse": 1}


def ik_log_flags(log_header: str) -> list[ParsedFlag]:
    """The logging flags ``gpt_params_find_arg`` hands to ``common/log.h``'s parsers."""
    out = []
    for function, values in _LOG_PARSERS.items():
        found = re.search(rf"^inline bool {function}\(.*?\n\{{\n(.*?)^\}}", log_header, re.M | re.S)
        if found is None:
            raise ValueError(f"log.h: no {function} function")
        for spelling in re.findall(r'param == "([^"]+)"', found.group(1)):
            out.append(ParsedFlag((spelling,), values))
    return out


def ik_source_entries(source: str) -> list[HelpEntry]:
    """The option list ``gpt_params_print_usage`` prints, GPU-only entries included."""
    out = []
    for spec in _OPTION.findall(source):
        entry = _entry(spec.strip())
        if entry is not None:
            out.append(entry)
    return out


def ik_llama_cpp_flags(
    help_text: str, source: str, log_header: str = ""
) -> tuple[FlagCatalogue, list[HelpEntry]]:
    """The flags of ik_llama.cpp: its parser's, spelled as its help (or source) documents.

    ``log_header``: ``common/log.h``, whose parsers take the logging flags. Returns the
    catalogue and the help entries no parser flag matches (options of ik's other programs,
    which the common help lists too).
    """
    in_help = help_entries(help_text, indent=2)
    in_source = ik_source_entries(source)
    flags = []
    parsed_flags = ik_parser_flags(source)
    if "log_param_single_parse(argv[i])" in source:
        parsed_flags += ik_log_flags(log_header)
    for parsed in parsed_flags:
        names = set(parsed.spellings)
        doc = next((e for e in in_help if names & set(e.spellings)), None)
        hidden = doc is None
        if doc is None:
            doc = next((e for e in in_source if names & set(e.spellings)), None)
        documented = [s for s in (doc.spellings if doc else ()) if s in names]
        known = (*documented, *(s for s in parsed.spellings if s not in documented))
        spellings = documented_order(known)  # the first long documented spelling leads
        values = value_names(doc.hint if doc else "", parsed.values)
        flags.append(Flag(spellings, values, hidden))
    taken = {s for flag in flags for s in flag.spellings}
    unparsed = [e for e in in_help if not taken & set(e.spellings)]
    return catalogue(flags), unparsed


# ---------------------------------------------------------------- vLLM


def vllm_flags(actions: Iterable[Mapping[str, Any]]) -> FlagCatalogue:
    """The flags of vllm serve, from its parser's actions.

    Each action: ``option_strings`` (those ``--help`` shows first, then hidden ones such as
    ``--no-enable-x``), ``negative`` (the strings that turn a switch off: ``--disable-x``,
    ``--no-x``), ``nargs`` (argparse's), ``switch`` (takes no value), ``hidden`` (help
    suppressed) and ``metavar``.
    """
    flags = []
    for action in actions:
        strings = [s for s in action["option_strings"] if FLAG.fullmatch(s)]
        if not strings:
            continue
        hidden = bool(action.get("hidden"))
        negative = set(action.get("negative") or ())
        if negative:
            for group in (
                [s for s in strings if s not in negative],
                [s for s in strings if s in negative],
            ):
                if group:
                    flags.append(Flag(documented_order(group), (), hidden))
            continue
        values: tuple[str, ...] = ()
        if not action.get("switch"):
            nargs = action.get("nargs")
            name = str(action.get("metavar") or "VALUE")
            name = name if VALUE.fullmatch(name) else "VALUE"
            if isinstance(nargs, int):
                values = (name,) * nargs
            else:  # one value, or a list / an optional value, as orch passes them: one
                values = (name,)
        flags.append(Flag(documented_order(strings), values, hidden))
    return catalogue(flags)
