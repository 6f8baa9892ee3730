r"""``-ot`` patterns as llama.cpp and ik_llama.cpp read them: ECMAScript regular expressions.

Both engines compile each ``--override-tensor`` pattern with C++ ``std::regex`` (its default
ECMAScript grammar) and test tensor names with ``std::regex_search``. :func:`compile_pattern`
parses that grammar and refuses, with a message, what the engine rejects, what orch's matcher
does not support, and what Python's ``re`` reads differently, so that a pattern tried in Python
cannot silently mean something else to the engine. :meth:`Pattern.search` never backtracks:
the pattern's automaton runs over the name in lock-step (Thompson's construction, with its
steps cached as a DFA), so the work is bounded by the name's length times the pattern's size,
whatever the pattern.

The subset orch accepts:

- literal ASCII characters, ``.``, ``\d \D \w \W \s \S``, ``\f \n \r \t \v \0 \cX \xHH
  \uHHHH``, and ``\`` before any punctuation;
- classes ``[...]`` and ``[^...]`` with ranges and the escapes above (``[\b]`` is a backspace);
- assertions ``^`` and ``$`` (start and end of the name), ``\b`` ``\B``, lookahead ``(?=...)``
  and ``(?!...)``;
- groups ``(...)`` and ``(?:...)``, alternation ``|``, quantifiers ``* + ? {n} {n,} {n,m}``
  and their lazy forms (``*?`` ...: the same names match).

Refused: backreferences (``\1``: orch's matcher does not support them), and Python syntax the
engine rejects or reads differently: inline flags ``(?i)``, named groups ``(?P<n>...)``
``(?<n>...)``, comments ``(?#...)``, lookbehind, atomic groups, possessive quantifiers
(``a*+``), ``{,n}``, a literal ``{``, ``\A \Z \z`` and other letter escapes, octal escapes,
POSIX classes (``[[:alpha:]]``), the empty classes ``[]`` and ``[^]``, and non-ASCII
characters (the engine matches bytes; tensor names are ASCII).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

MAX_PATTERN_CHARS = 4096
MAX_DEPTH = 64
"""Nested groups; deeper patterns are refused rather than parsed by deep recursion."""
MAX_STATES = 20_000
"""Automaton states, so that ``(a{1000}){1000}`` is refused instead of built."""
MAX_REPEAT = 1000
MAX_CACHED_STEPS = 100_000

_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_LINE_TERMINATORS = ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
_DIGITS = ((0x30, 0x39),)
_WORD_RANGES = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE = ((0x09, 0x0D), (0x20, 0x20))
_CONTROL_ESCAPES = {"f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
_PYTHON_ANCHORS = {"A": "^", "Z": "$", "z": "$"}
_SPECIAL = set("^$\\.*+?()[]{}|")


class PatternError(ValueError):
    """A pattern the engine rejects, reads differently from Python, or orch cannot match."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} (at position {position})")


# ---------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class CharSet:
    """Code point ranges (inclusive), possibly negated."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def matches(self, char: str) -> bool:
        """Whether ``char`` is in the set."""
        code = ord(char)
        inside = any(lo <= code <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def single(self) -> str | None:
        """The one character this set is, if it is a plain literal."""
        if not self.negated and len(self.ranges) == 1 and self.ranges[0][0] == self.ranges[0][1]:
            return chr(self.ranges[0][0])
        return None


@dataclass(frozen=True)
class _Chars:
    chars: CharSet


@dataclass(frozen=True)
class _Assert:
    kind: str
    """``^``, ``$``, ``b`` (word boundary) or ``B``."""


@dataclass(frozen=True)
class _Look:
    node: _Node
    negated: bool


@dataclass(frozen=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    options: tuple[_Node, ...]


@dataclass(frozen=True)
class _Repeat:
    node: _Node
    low: int
    high: int | None


_Node = _Chars | _Assert | _Look | _Seq | _Alt | _Repeat


def _negate(ranges: tuple[tuple[int, int], ...]) -> CharSet:
    return CharSet(ranges, negated=True)


_CLASS_ESCAPES: dict[str, CharSet] = {
    "d": CharSet(_DIGITS),
    "D": _negate(_DIGITS),
    "w": CharSet(_WORD_RANGES),
    "W": _negate(_WORD_RANGES),
    "s": CharSet(_SPACE),
    "S": _negate(_SPACE),
}


# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, message: str, position: int | None = None) -> PatternError:
        return PatternError(message, self.pos if position is None else position)

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def parse(self) -> _Node:
        node = self.alternation()
        if self.pos < len(self.text):  # only a stray ')' stops an alternation early
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> _Node:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else _Alt(tuple(options))

    def sequence(self) -> _Node:
        items: list[_Node] = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            start = self.pos
            atom = self.atom()
            items.append(self.quantified(atom, start))
        return items[0] if len(items) == 1 else _Seq(tuple(items))

    def quantified(self, atom: _Node, start: int) -> _Node:
        bounds = self.quantifier()
        if bounds is None:
            return atom
        if isinstance(atom, _Assert | _Look):
            raise self.fail("an assertion cannot be repeated", start)
        low, high = bounds
        if self.peek() == "?":
            self.pos += 1  # lazy: matches the same names
        after = self.peek()
        if after in ("*", "+", "?") or (after == "{" and self.brace_quantifier(dry=True)):
            if after == "+" and self.text[self.pos - 1] != "?":
                raise self.fail(
                    "possessive quantifiers (a*+) are Python syntax; the engine reads them as "
                    "a repeat of a repeat: drop the '+'"
                )
            raise self.fail("a quantifier cannot follow another (multiple repeat): use (?:...)")
        return _Repeat(atom, low, high)

    def quantifier(self) -> tuple[int, int | None] | None:
        char = self.peek()
        if char == "*":
            self.pos += 1
            return 0, None
        if char == "+":
            self.pos += 1
            return 1, None
        if char == "?":
            self.pos += 1
            return 0, 1
        if char == "{":
            return self.brace_quantifier(dry=False)
        return None

    def brace_quantifier(self, *, dry: bool) -> tuple[int, int | None] | None:
        start = self.pos
        end = self.text.find("}", start)
        body = self.text[start + 1 : end] if end != -1 else ""
        low_text, comma, high_text = body.partition(",")
        valid = (
            end != -1
            and low_text.isascii()
            and low_text.isdigit()
            and (not high_text or (high_text.isascii() and high_text.isdigit()))
        )
        if dry:
            return (0, None) if valid else None
        if not valid:
            if end != -1 and body.startswith(","):
                raise self.fail("{,n} is Python syntax; write {0,n}")
            raise self.fail(
                "'{' must start a quantifier {n}, {n,} or {n,m}; for a literal brace write \\{"
            )
        low = int(low_text)
        high = int(high_text) if high_text else (None if comma else low)
        if high is not None and high < low:
            raise self.fail(f"{{{body}}}: the maximum is below the minimum")
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise self.fail(f"{{{body}}}: orch allows at most {MAX_REPEAT} repeats")
        self.pos = end + 1
        return low, high

    def atom(self) -> _Node:
        char = self.peek()
        if not char.isascii():
            raise self.fail(
                f"non-ASCII character {char!r}: tensor names are ASCII and the engine matches bytes"
            )
        if char in "*+?":
            raise self.fail(f"nothing to repeat before '{char}'")
        if char == "{":
            if self.brace_quantifier(dry=True):
                raise self.fail("nothing to repeat before '{'")
            self.brace_quantifier(dry=False)  # raises the literal-brace message
        if char == "(":
            return self.group()
        if char == "[":
            return _Chars(self.char_class())
        if char == "\\":
            return self.escape()
        self.pos += 1
        if char == ".":
            return _Chars(_negate(_LINE_TERMINATORS))
        if char in "^$":
            return _Assert(char)
        return _Chars(CharSet(((ord(char), ord(char)),)))

    def group(self) -> _Node:
        start = self.pos
        self.pos += 1
        negated: bool | None = None  # None: a plain group
        if self.peek() == "?":
            kind = self.peek(1)
            rest = self.text[self.pos + 1 :]
            if kind == ":":
                self.pos += 2
            elif kind in "=!" and kind:
                negated = kind == "!"
                self.pos += 2
            elif rest.startswith(("<=", "<!")):
                raise self.fail(
                    "lookbehind (?<=...) is not in the engine's ECMAScript regex", start
                )
            elif kind in ("P", "<"):
                raise self.fail(
                    "named groups are Python syntax the engine's std::regex rejects; use (...)",
                    start,
                )
            elif kind == "#":
                raise self.fail("comments (?#...) are Python syntax; remove them", start)
            elif kind == ">":
                raise self.fail("atomic groups (?>...) are Python syntax; use (?:...)", start)
            elif kind and kind in "aiLmsux-":
                raise self.fail(
                    "inline flags such as (?i) are Python syntax; the engine's regex has no "
                    "flags (tensor names are lower case)",
                    start,
                )
            else:
                raise self.fail("'(?' must be followed by ':', '=' or '!'", start)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"groups nest deeper than {MAX_DEPTH}", start)
        inner = self.alternation()
        self.depth -= 1
        if self.peek() != ")":
            raise self.fail("missing ')'", start)
        self.pos += 1
        return inner if negated is None else _Look(inner, negated)

    def escape(self) -> _Node:
        start = self.pos
        char = self.peek(1)
        if char in ("b", "B"):
            self.pos += 2
            return _Assert(char)
        if char in _CLASS_ESCAPES:
            self.pos += 2
            return _Chars(_CLASS_ESCAPES[char])
        code = self.char_escape(in_class=False)
        if code is None:
            raise self.fail("unexpected escape", start)
        return _Chars(CharSet(((code, code),)))

    def char_escape(self, *, in_class: bool) -> int | None:
        """The code point of the escape at ``pos`` (a backslash), advancing past it."""
        start = self.pos
        char = self.peek(1)
        if not char:
            raise self.fail("trailing backslash", start)
        if char in _CONTROL_ESCAPES:
            self.pos += 2
            return _CONTROL_ESCAPES[char]
        if in_class and char == "b":
            self.pos += 2
            return 0x08
        if char == "0":
            if self.peek(2).isdigit():
                raise self.fail("octal escapes are Python syntax; write \\xHH", start)
            self.pos += 2
            return 0
        if char.isdigit():
            raise self.fail("backreferences (\\1) are not supported by orch's -ot matcher", start)
        if char == "c":
            letter = self.peek(2)
            if not (letter.isascii() and letter.isalpha()):
                raise self.fail("\\c must be followed by a letter", start)
            self.pos += 3
            return ord(letter) % 32
        if char in ("x", "u"):
            width = 2 if char == "x" else 4
            digits = self.text[self.pos + 2 : self.pos + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"\\{char} needs exactly {width} hex digits", start)
            self.pos += 2 + width
            return int(digits, 16)
        if char in _PYTHON_ANCHORS:
            raise self.fail(
                f"\\{char} is an anchor in Python but a literal {char!r} in the engine's "
                f"ECMAScript regex; use {_PYTHON_ANCHORS[char]}",
                start,
            )
        if char.isascii() and char.isalnum():
            raise self.fail(
                f"\\{char} is not an ECMAScript escape: the engine reads a literal {char!r} "
                f"(Python may not); write {char}",
                start,
            )
        if not char.isascii():
            raise self.fail(f"non-ASCII character {char!r}", start + 1)
        self.pos += 2
        return ord(char)  # identity escape of punctuation: \. \\ \- \] ...

    def char_class(self) -> CharSet:
        start = self.pos
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        if self.peek() == "]":
            raise self.fail(
                "an empty class ([] or [^]) matches nothing or anything in the engine but "
                "Python reads []...] differently; write \\] for a literal bracket",
                start,
            )
        ranges: list[tuple[int, int]] = []
        negated_sets: list[CharSet] = []
        while True:
            char = self.peek()
            if not char:
                raise self.fail("missing ']'", start)
            if char == "]":
                self.pos += 1
                break
            low, low_set = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                dash = self.pos
                self.pos += 1
                high, high_set = self.class_atom()
                if low_set is not None or high_set is not None:
                    raise self.fail("a range cannot start or end at a class escape", dash)
                assert low is not None and high is not None
                if high < low:
                    raise self.fail(f"range {chr(low)}-{chr(high)} is reversed", dash)
                ranges.append((low, high))
            elif low_set is not None:
                if low_set.negated:
                    negated_sets.append(low_set)
                else:
                    ranges.extend(low_set.ranges)
            else:
                assert low is not None
                ranges.append((low, low))
        for complement in negated_sets:
            ranges.extend(_complement(complement.ranges))
        return CharSet(tuple(ranges), negated)

    def class_atom(self) -> tuple[int | None, CharSet | None]:
        char = self.peek()
        if not char.isascii():
            raise self.fail(f"non-ASCII character {char!r}: tensor names are ASCII")
        if char == "[" and self.peek(1) in (":", ".", "="):
            raise self.fail(
                "POSIX classes such as [[:alpha:]] mean different things to Python and the "
                "engine; use \\w, \\d or a range like [a-z]"
            )
        if char == "\\":
            escaped = self.peek(1)
            if escaped in _CLASS_ESCAPES:
                self.pos += 2
                return None, _CLASS_ESCAPES[escaped]
            if escaped.isdigit() and escaped != "0":
                raise self.fail("a backreference cannot appear in a class")
            return self.char_escape(in_class=True), None
        self.pos += 1
        return ord(char), None


def _complement(ranges: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    next_low = 0
    for low, high in sorted(ranges):
        if low > next_low:
            out.append((next_low, low - 1))
        next_low = max(next_low, high + 1)
    out.append((next_low, 0x10FFFF))
    return out


# ---------------------------------------------------------------- automaton

_MATCH, _CHAR, _SPLIT, _ASSERT, _LOOK = range(5)


@dataclass
class _Automaton:
    """Thompson NFA: state 0 accepts; ``start`` is where matching begins."""

    kinds: list[int] = field(default_factory=lambda: [_MATCH])
    outs: list[tuple[int, ...]] = field(default_factory=lambda: [()])
    chars: list[CharSet | None] = field(default_factory=lambda: [None])
    asserts: list[str] = field(default_factory=lambda: [""])
    looks: list[tuple[_Automaton, bool] | None] = field(default_factory=lambda: [None])
    start: int = 0
    size: list[int] = field(default_factory=lambda: [0])
    """Shared across an automaton and its lookaheads, for the MAX_STATES limit."""

    def add(self, kind: int, outs: tuple[int, ...], **extra: object) -> int:
        self.size[0] += 1
        if self.size[0] > MAX_STATES:
            raise PatternError(f"the pattern is too large (over {MAX_STATES} states)", 0)
        self.kinds.append(kind)
        self.outs.append(outs)
        chars = extra.get("chars")
        self.chars.append(chars if isinstance(chars, CharSet) else None)
        self.asserts.append(str(extra.get("assertion", "")))
        look = extra.get("look")
        self.looks.append(look if isinstance(look, tuple) else None)
        return len(self.kinds) - 1

    def emit(self, node: _Node, following: int) -> int:
        """States for ``node`` that continue at ``following``; returns the entry state."""
        if isinstance(node, _Chars):
            return self.add(_CHAR, (following,), chars=node.chars)
        if isinstance(node, _Assert):
            return self.add(_ASSERT, (following,), assertion=node.kind)
        if isinstance(node, _Look):
            sub = _Automaton(size=self.size)
            sub.start = sub.emit(node.node, 0)
            return self.add(_LOOK, (following,), look=(sub, node.negated))
        if isinstance(node, _Seq):
            for item in reversed(node.items):
                following = self.emit(item, following)
            return following
        if isinstance(node, _Alt):
            return self.add(_SPLIT, tuple(self.emit(o, following) for o in node.options))
        if node.high is None:
            loop = self.add(_SPLIT, ())
            self.outs[loop] = (self.emit(node.node, loop), following)
            tail = loop
        else:
            tail = following
            for _ in range(node.high - node.low):
                tail = self.add(_SPLIT, (self.emit(node.node, tail), following))
        for _ in range(node.low):
            tail = self.emit(node.node, tail)
        return tail

    def close(
        self, seeds: frozenset[int], text: str, pos: int, memo: dict[tuple[int, int], bool]
    ) -> tuple[list[int], bool]:
        """The character states reachable from ``seeds`` at ``pos``, and whether it accepts."""
        stack = list(seeds)
        seen: set[int] = set()
        waiting: list[int] = []
        accepted = False
        while stack:
            state = stack.pop()
            if state in seen:
                continue
            seen.add(state)
            kind = self.kinds[state]
            if kind == _CHAR:
                waiting.append(state)
            elif kind == _SPLIT:
                stack.extend(self.outs[state])
            elif kind == _MATCH:
                accepted = True
            elif kind == _ASSERT:
                if _holds(self.asserts[state], text, pos):
                    stack.append(self.outs[state][0])
            else:
                look = self.looks[state]
                assert look is not None
                sub, negated = look
                key = (id(sub), pos)
                if key not in memo:
                    memo[key] = sub.run(text, pos, anchored=True, memo=memo)
                if memo[key] != negated:
                    stack.append(self.outs[state][0])
        return waiting, accepted

    def step(self, waiting: list[int], char: str) -> set[int]:
        """States entered after reading ``char``."""
        out: set[int] = set()
        for state in waiting:
            chars = self.chars[state]
            assert chars is not None
            if chars.matches(char):
                out.add(self.outs[state][0])
        return out

    def run(
        self, text: str, pos: int, *, anchored: bool, memo: dict[tuple[int, int], bool]
    ) -> bool:
        """Whether a match starts at ``pos`` (anchored) or anywhere from ``pos`` on."""
        seeds = frozenset((self.start,))
        while True:
            waiting, accepted = self.close(seeds, text, pos, memo)
            if accepted:
                return True
            if pos == len(text):
                return False
            entered = self.step(waiting, text[pos])
            if not anchored:
                entered.add(self.start)
            if not entered:
                return False
            seeds = frozenset(entered)
            pos += 1


def _is_word(text: str, pos: int) -> bool:
    return 0 <= pos < len(text) and text[pos] in _WORD


def _holds(kind: str, text: str, pos: int) -> bool:
    if kind == "^":
        return pos == 0
    if kind == "$":
        return pos == len(text)
    boundary = _is_word(text, pos - 1) != _is_word(text, pos)
    return boundary if kind == "b" else not boundary


# ---------------------------------------------------------------- public


def _required_literal(node: _Node) -> str:
    """A substring every match contains (the longest orch can see cheaply), or ``""``."""
    if isinstance(node, _Chars):
        return node.chars.single() or ""
    if isinstance(node, _Repeat):
        return _required_literal(node.node) if node.low >= 1 else ""
    if isinstance(node, _Seq):
        candidates: list[str] = []
        run = ""
        for item in node.items:
            single = item.chars.single() if isinstance(item, _Chars) else None
            if single is not None:
                run += single
                continue
            candidates += [run, _required_literal(item)]
            run = ""
        candidates.append(run)
        return max(candidates, key=len)
    return ""


def _uses(node: _Node, kinds: set[str]) -> None:
    if isinstance(node, _Assert):
        kinds.add(node.kind)
    elif isinstance(node, _Look):
        kinds.add("look")
        _uses(node.node, kinds)
    elif isinstance(node, _Seq):
        for item in node.items:
            _uses(item, kinds)
    elif isinstance(node, _Alt):
        for option in node.options:
            _uses(option, kinds)
    elif isinstance(node, _Repeat):
        _uses(node.node, kinds)


def _nested_repeat(node: _Node, inside: bool = False) -> bool:
    """Whether an unbounded repeat sits inside another repeat, as in ``(.*)*``."""
    if isinstance(node, _Repeat):
        if inside and node.high is None:
            return True
        return _nested_repeat(node.node, inside or node.high is None or node.high > 1)
    if isinstance(node, _Look):
        return _nested_repeat(node.node, inside)
    if isinstance(node, _Seq):
        return any(_nested_repeat(item, inside) for item in node.items)
    if isinstance(node, _Alt):
        return any(_nested_repeat(option, inside) for option in node.options)
    return False


class Pattern:
    """A compiled pattern; :meth:`search` is ``std::regex_search`` on one tensor name."""

    def __init__(self, text: str) -> None:
        """Parse ``text``; raises PatternError."""
        if len(text) > MAX_PATTERN_CHARS:
            raise PatternError(f"longer than {MAX_PATTERN_CHARS} characters", MAX_PATTERN_CHARS)
        self.text = text
        tree = _Parser(text).parse()
        self._automaton = _Automaton()
        self._automaton.start = self._automaton.emit(tree, 0)
        self._required = _required_literal(tree)
        self.nested_repeat = _nested_repeat(tree)
        """``(.*)*``-like: the engine's backtracking std::regex may take very long on it."""
        kinds: set[str] = set()
        _uses(tree, kinds)
        self._lookahead = "look" in kinds
        self._at_start = "^" in kinds
        self._at_end = "$" in kinds
        self._words = bool(kinds & {"b", "B"})
        self._state_ids: dict[frozenset[int], int] = {}
        self._states: list[frozenset[int]] = []
        self._steps: dict[tuple[int, str, bool, bool], tuple[bool, int]] = {}

    def search(self, name: str) -> bool:
        """Whether the pattern matches anywhere in ``name``."""
        if self._required and self._required not in name:
            return False
        if self._lookahead:
            return self._automaton.run(name, 0, anchored=False, memo={})
        if len(self._steps) >= MAX_CACHED_STEPS:  # bound the cache: start afresh
            self._steps.clear()
            self._state_ids.clear()
            self._states.clear()
        state = self._intern(frozenset((self._automaton.start,)))
        previous_word = False
        for pos in range(len(name) + 1):
            char = name[pos] if pos < len(name) else ""  # "": the end of the name
            key = (state, char, self._at_start and pos == 0, self._words and previous_word)
            found = self._steps.get(key)
            if found is None:
                found = self._steps[key] = self._step(state, name, pos)
            accepted, state = found
            if accepted:
                return True
            previous_word = char in _WORD
        return False

    def _step(self, state: int, name: str, pos: int) -> tuple[bool, int]:
        # Everything the closure reads about the context is in the cache key: whether pos is
        # the start or the end, the previous character's class and the next character.
        waiting, accepted = self._automaton.close(self._states[state], name, pos, {})
        if accepted or pos == len(name):
            return accepted, -1
        entered = self._automaton.step(waiting, name[pos])
        entered.add(self._automaton.start)
        return False, self._intern(frozenset(entered))

    def _intern(self, states: frozenset[int]) -> int:
        found = self._state_ids.get(states)
        if found is None:
            found = self._state_ids[states] = len(self._states)
            self._states.append(states)
        return found


@functools.lru_cache(maxsize=1024)
def compile_pattern(text: str) -> Pattern:
    """Parse an ``-ot`` pattern as the engines read it (cached); raises PatternError."""
    return Pattern(text)
