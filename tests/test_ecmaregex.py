"""-ot patterns: orch's ECMAScript matcher against the engines' own std::regex, and its refusals."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.ecmaregex import PatternError, compile_pattern
from orchestrator.memory.tensors import tensors_from_architecture
from orchestrator.profiles.loader import Catalog
from tests.conftest import PROFILES
from tests.hostile import GOOD, Case, Cli, bad, cli, ids

__all__ = ["cli"]

ORACLE_SOURCE = Path(__file__).resolve().parent / "oracle" / "std_regex.cpp"


class StdRegex:
    """A running tests/oracle/std_regex.cpp: libstdc++'s std::regex, as llama.cpp uses it."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def compiles(self, pattern: str) -> bool:
        return self.ask("P" + pattern) == "ok"

    def search(self, name: str) -> bool:
        return self.ask("N" + name) == "1"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def std_regex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdRegex]:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is needed to build the std::regex oracle (apt-get install -y g++)")
    binary = tmp_path_factory.mktemp("oracle") / "std_regex"
    subprocess.run([compiler, "-O1", "-o", str(binary), str(ORACLE_SOURCE)], check=True)
    oracle = StdRegex(binary)
    yield oracle
    oracle.close()


def tensor_names() -> list[str]:
    catalog = Catalog(PROFILES)
    names: list[str] = []
    for arch_name in ("qwen3-coder-next", "synthetic-tiny-dense"):
        arch = catalog.architecture(arch_name, "test")
        names += [t.name for t in tensors_from_architecture(arch, "Q8_0")]
    return sorted(set(names))


NAMES = tensor_names()
ODD_NAMES = ["", "a", "blk", "blk.", "_", "x.y_z", "blk.1.ffn_up_exps.weight.extra", "ZZZ"]

AGREE = [
    "exps",
    r"\.ffn_(up|down|gate)_exps",
    r"blk\.(1[0-9]|2[0-3])\.ffn_.*_exps",
    r"^blk\.1\.",
    r"weight$",
    r"^output",
    r"\bffn",
    r"ffn\B",
    r"blk\.\d+\.attn_[qkv]\.",
    r"blk\.[^0-4]\.",
    r"(?:attn|ffn)_norm",
    r"blk\.(?!0\.)\d+\.ffn_down",
    r"blk\.(?=1)\d\.",
    r"token_embd|output\.weight",
    r"a{2,}",
    r"blk\.\d{2}\.",
    r"blk\.\d{1}\.",
    r"_exps\.weight$",
    r"[\w]+\.[\d]+",
    r"[^\w.]",
    r"\x62lk",
    r"\u0062lk",
    r"[a\-z]",
    r"[-a]",
    r"[\]]",
    r"}",
    r"]",
    r"",
    r"|",
    r"()",
    r"(|ffn)exps",
    r"(a|ab)(c|bcd)(d*)",
    r".*.*.*=?",
    r"blk\.\d+?\.ffn_up??_exps",
    r"\s",
    r"\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S\S",
]


@pytest.mark.parametrize("pattern", AGREE)
def test_matches_like_std_regex(std_regex: StdRegex, pattern: str) -> None:
    assert std_regex.compiles(pattern)
    compiled = compile_pattern(pattern)
    for name in NAMES + ODD_NAMES:
        assert compiled.search(name) == std_regex.search(name), (pattern, name)


REFUSED: list[tuple[str, str]] = [
    (
        "(?i)EXPS",
        "inline flags such as (?i) are Python syntax; the engine's regex has no flags (tensor names are lower case) (at position 0)",
    ),
    (
        "(?P<n>exps)",
        "named groups are Python syntax the engine's std::regex rejects; use (...) (at position 0)",
    ),
    (
        "(?<n>exps)",
        "named groups are Python syntax the engine's std::regex rejects; use (...) (at position 0)",
    ),
    ("(?#note)exps", "comments (?#...) are Python syntax; remove them (at position 0)"),
    ("(?<=blk)exps", "lookbehind (?<=...) is not in the engine's ECMAScript regex (at position 0)"),
    ("(?>exps)", "atomic groups (?>...) are Python syntax; use (?:...) (at position 0)"),
    (
        "(?x)",
        "inline flags such as (?i) are Python syntax; the engine's regex has no flags (tensor names are lower case) (at position 0)",
    ),
    ("(?", "'(?' must be followed by ':', '=' or '!' (at position 0)"),
    (
        "exps\\Z",
        "\\Z is an anchor in Python but a literal 'Z' in the engine's ECMAScript regex; use $ (at position 4)",
    ),
    (
        "\\Aoutput",
        "\\A is an anchor in Python but a literal 'A' in the engine's ECMAScript regex; use ^ (at position 0)",
    ),
    (
        "exps\\z",
        "\\z is an anchor in Python but a literal 'z' in the engine's ECMAScript regex; use $ (at position 4)",
    ),
    (
        "\\e",
        "\\e is not an ECMAScript escape: the engine reads a literal 'e' (Python may not); write e (at position 0)",
    ),
    ("\\012", "octal escapes are Python syntax; write \\xHH (at position 0)"),
    ("(exps)\\1", "backreferences (\\1) are not supported by orch's -ot matcher (at position 6)"),
    ("[\\1]", "a backreference cannot appear in a class (at position 1)"),
    (
        "exps*+",
        "possessive quantifiers (a*+) are Python syntax; the engine reads them as a repeat of a repeat: drop the '+' (at position 5)",
    ),
    ("exps**", "a quantifier cannot follow another (multiple repeat): use (?:...) (at position 5)"),
    (
        "a{1,2}{3}",
        "a quantifier cannot follow another (multiple repeat): use (?:...) (at position 6)",
    ),
    ("*exps", "nothing to repeat before '*' (at position 0)"),
    ("a|*", "nothing to repeat before '*' (at position 2)"),
    ("{2}", "nothing to repeat before '{' (at position 0)"),
    ("^*", "an assertion cannot be repeated (at position 0)"),
    ("(?=a)+", "an assertion cannot be repeated (at position 0)"),
    (
        "x{",
        "'{' must start a quantifier {n}, {n,} or {n,m}; for a literal brace write \\{ (at position 1)",
    ),
    ("x{,3}", "{,n} is Python syntax; write {0,n} (at position 1)"),
    ("x{3,1}", "{3,1}: the maximum is below the minimum (at position 1)"),
    ("x{1001}", "{1001}: orch allows at most 1000 repeats (at position 1)"),
    ("x[", "missing ']' (at position 1)"),
    ("(exps", "missing ')' (at position 0)"),
    ("exps)", "unbalanced ')' (at position 4)"),
    ("exps\\", "trailing backslash (at position 4)"),
    (
        "[]exps]",
        "an empty class ([] or [^]) matches nothing or anything in the engine but Python reads []...] differently; write \\] for a literal bracket (at position 0)",
    ),
    (
        "[^]",
        "an empty class ([] or [^]) matches nothing or anything in the engine but Python reads []...] differently; write \\] for a literal bracket (at position 0)",
    ),
    (
        "[[:digit:]]",
        "POSIX classes such as [[:alpha:]] mean different things to Python and the engine; use \\w, \\d or a range like [a-z] (at position 1)",
    ),
    ("[z-a]", "range z-a is reversed (at position 2)"),
    ("[\\d-x]", "a range cannot start or end at a class escape (at position 3)"),
    ("\\x4", "\\x needs exactly 2 hex digits (at position 0)"),
    ("\\u00e", "\\u needs exactly 4 hex digits (at position 0)"),
    ("\\c1", "\\c must be followed by a letter (at position 0)"),
    (
        "exps\u00e9",
        "non-ASCII character 'é': tensor names are ASCII and the engine matches bytes (at position 4)",
    ),
    ("(" * 65 + ")" * 65, "groups nest deeper than 64 (at position 64)"),
    ("(a{1000}){1000}", "the pattern is too large (over 20000 states) (at position 0)"),
    ("a" * 4097, "longer than 4096 characters (at position 4096)"),
]


@pytest.mark.parametrize(("pattern", "message"), REFUSED, ids=[r[0][:20] for r in REFUSED])
def test_refused_with_a_reason(pattern: str, message: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert str(info.value) == message


ENGINE_REJECTS = [
    "(?i)EXPS",
    "(?P<n>exps)",
    "(?#note)",
    "(?<=blk)exps",
    "(exps",
    "x{",
    "x{,3}",
    "[z-a]",
    "\\x4",
    "{2}",
    "^*",
    "(?=a)+",
    "a|*",
    "exps)",
]


@pytest.mark.parametrize("pattern", ENGINE_REJECTS)
def test_what_the_engine_rejects_is_refused(std_regex: StdRegex, pattern: str) -> None:
    assert not std_regex.compiles(pattern)
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_catastrophic_patterns_take_bounded_time() -> None:
    names = NAMES * 4
    for pattern in ("(.*.*.*.*.*)*Q", "(a*)*Q", "(x+x+)+Q", "(.*){20}Q", "((a|a)*)*Q"):
        start = time.perf_counter()
        compiled = compile_pattern(pattern)
        hits = [n for n in names + ["a" * 60, "x" * 60] if compiled.search(n)]
        assert hits == []
        assert time.perf_counter() - start < 2.0, pattern


ATOMS = st.sampled_from(
    [
        "b",
        "l",
        "k",
        ".",
        r"\.",
        "_",
        "e",
        "x",
        "p",
        "s",
        "f",
        "n",
        "1",
        "0",
        r"\d",
        r"\w",
        "[0-9]",
        "[^.]",
        "[a-f]",
        "^",
        "$",
        r"\b",
        "(?:ffn|attn)",
        "(up|down)",
        "exps",
        "blk",
        "weight",
    ]
)
QUANTS = st.sampled_from(["", "", "", "*", "+", "?", "{1,2}", "*?", "{2}"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """Star height <= 1, so std::regex's backtracking stays fast on these names."""
    pieces = []
    for _ in range(draw(st.integers(1, 6))):
        atom = draw(ATOMS)
        quant = draw(QUANTS) if atom not in ("^", "$", r"\b") else ""
        pieces.append(atom + quant)
    text = "".join(pieces)
    if draw(st.booleans()):
        text += "|" + draw(ATOMS)
    return text


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same patterns every run: CI must not be flaky
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pattern=patterns())
def test_generated_patterns_agree_with_std_regex(std_regex: StdRegex, pattern: str) -> None:
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return  # refusals are pinned above; the engine may accept some (Python differences)
    assert std_regex.compiles(pattern), pattern
    for name in NAMES[::7] + ODD_NAMES:
        assert compiled.search(name) == std_regex.search(name), (pattern, name)


# ---------------------------------------------------------------- through the real CLI


def ot(pattern: str) -> str:
    return GOOD + f"\n[[engine.override_tensors]]\npattern = '{pattern}'\ndevice = \"CPU\"\n"


PROFILE_CASES = [
    bad(
        "(?i) in a profile",
        ot("(?i)EXPS"),
        "engine.override_tensors[0].pattern: '(?i)EXPS': inline flags such as (?i) are Python "
        "syntax; the engine's regex has no flags (tensor names are lower case) (at position 0)",
    ),
    bad(
        "(?P<n>) in a profile",
        ot("(?P<e>exps)"),
        "engine.override_tensors[0].pattern: '(?P<e>exps)': named groups are Python syntax the "
        "engine's std::regex rejects; use (...) (at position 0)",
    ),
    bad(
        "(?#) in a profile",
        ot("exps(?#experts)"),
        "engine.override_tensors[0].pattern: 'exps(?#experts)': comments (?#...) are Python "
        "syntax; remove them (at position 4)",
    ),
    bad(
        "\\Z in a profile",
        ot("exps\\Z"),
        "engine.override_tensors[0].pattern: 'exps\\\\Z': \\Z is an anchor in Python but a "
        "literal 'Z' in the engine's ECMAScript regex; use $ (at position 4)",
    ),
    bad(
        "backreference in a profile",
        ot("(ffn)_\\1"),
        "engine.override_tensors[0].pattern: '(ffn)_\\\\1': backreferences (\\1) are not "
        "supported by orch's -ot matcher (at position 6)",
    ),
    bad(
        "empty pattern",
        ot(""),
        "engine.override_tensors[0].pattern: empty: it would match every tensor (write . if "
        "that is meant)",
    ),
]


@pytest.mark.parametrize("case", PROFILE_CASES, ids=ids(PROFILE_CASES))
def test_profile_patterns_follow_the_engine(cli: Cli, case: Case) -> None:
    cli.check(case)


def test_catastrophic_pattern_does_not_hang_the_cli(cli: Cli, tmp_path: Path) -> None:
    from orchestrator.synthetic import TINY_DENSE, write_gguf

    cli.write({"models/slow.toml": ot("(.*.*.*.*.*)*Q")})
    gguf = write_gguf(TINY_DENSE, tmp_path / "tiny.gguf")
    start = time.perf_counter()
    plan = cli.run("plan", "--dry-run", "slow")
    validate = cli.run("validate")
    estimate = cli.run("estimate", str(gguf), "--", "-ot", "(.*.*.*.*.*)*Q=CPU")
    assert time.perf_counter() - start < 30
    assert plan.code == 0 and estimate.code == 0, plan.err + estimate.err
    assert validate.code == 0, validate.out
    assert (
        "  warning: engine.override_tensors[0].pattern '(.*.*.*.*.*)*Q': a repeat inside a "
        "repeat; the engine's std::regex backtracks and may take very long on it at load"
    ) in plan.out.splitlines()
