"""Parse a ``vllm serve`` command line with vLLM's own argument parser.

Runs under ``.venv-vllm``'s python (``scripts/install-vllm-argparser.sh``), not the project's::

    .venv-vllm/bin/python tests/vllm_argcheck.py MODEL [FLAGS...]

The arguments are what follows ``vllm serve``. The parser is built the way ``vllm serve``
builds it (``vllm.entrypoints.cli.main``: a ``FlexibleArgumentParser`` named ``vllm`` whose
``serve`` subcommand comes from ``ServeSubcommand.subparser_init``); ``serve ARGS...`` is parsed,
then ``ServeSubcommand.validate`` and ``AsyncEngineArgs.from_cli_args`` run, the checks
``vllm serve`` makes before it loads a model. On success the parsed arguments are printed as
JSON. A flag or value vLLM rejects exits 2 with argparse's message on stderr, as ``vllm serve``
does; a failed validation exits 1.

``--orch-batch`` (alone) instead reads a JSON list of argument lists on stdin and prints one
JSON object: vLLM's version, every option string the serve parser accepts, and one result per
argument list (so the tests pay vLLM's ~10 s import once).

No GPU is needed: ``VLLM_TARGET_DEVICE`` defaults to ``cpu`` here so that vLLM picks its CPU
platform instead of failing to infer a device while it builds the parser's defaults.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import os
import sys
from typing import Any

BATCH = "--orch-batch"

# vLLM's log handler writes to sys.stdout; keep stdout for the JSON answer.
_STDOUT = sys.stdout
sys.stdout = sys.stderr
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm  # noqa: E402
from vllm.config.cache import KV_CACHE_DTYPES  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.entrypoints.cli.serve import ServeSubcommand  # noqa: E402
from vllm.entrypoints.common.startup import cli_env_setup  # noqa: E402
from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402


def build_parser() -> tuple[Any, Any, ServeSubcommand]:
    """The top-level ``vllm`` parser, its ``serve`` subparser, and the serve subcommand."""
    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
    parser.add_argument("-v", "--version", action="version", version=vllm.__version__)
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand()
    serve_parser = serve.subparser_init(subparsers)
    serve_parser.set_defaults(dispatch_function=serve.cmd)
    return parser, serve_parser, serve


def jsonable(value: Any) -> Any:
    """Parsed values as JSON: scalars, lists and dicts kept, enums as values, the rest repr'd."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


def check(argv: list[str]) -> dict[str, Any]:
    """Parse ``vllm serve ARGV`` as vLLM does; never raises, never exits."""
    result: dict[str, Any] = {"argv": argv, "ok": False, "exit_code": 0, "error": ""}
    parser, serve_parser, serve = build_parser()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(["serve", *argv])
    except SystemExit as exc:
        result["exit_code"] = exc.code if isinstance(exc.code, int) else 2
        result["error"] = errors.getvalue().strip() or str(exc.code)
        return result
    try:
        serve.validate(args)
        if args.model_tag is not None:  # ServeSubcommand.cmd does this first
            args.model = args.model_tag
        AsyncEngineArgs.from_cli_args(args)
    except Exception as exc:  # vLLM raises ValueError, TypeError, pydantic errors...
        result["exit_code"] = 1
        result["error"] = f"vllm serve: error: {type(exc).__name__}: {exc}"
        return result
    parsed = {k: v for k, v in vars(args).items() if k != "dispatch_function"}
    deprecated: set[Any] = getattr(serve_parser, "_deprecated", set())
    result["ok"] = True
    result["args"] = jsonable(parsed)
    result["deprecated"] = sorted(
        a.option_strings[0] if a.option_strings else a.dest
        for a in deprecated
        if getattr(args, a.dest, a.default) != a.default
    )
    return result


def batch(argvs: list[list[str]]) -> dict[str, Any]:
    """The serve parser's option strings and choices, and a result per argument list.

    ``kv_cache_dtypes``: the parser takes any ``--kv-cache-dtype`` string; vLLM checks it
    against this list later, when it builds its cache config.
    """
    _, serve_parser, _ = build_parser()
    actions = serve_parser._option_string_actions
    return {
        "vllm": vllm.__version__,
        "options": sorted(actions),
        "choices": {k: jsonable(a.choices) for k, a in sorted(actions.items()) if a.choices},
        "kv_cache_dtypes": list(KV_CACHE_DTYPES),
        "results": [check(list(argv)) for argv in argvs],
    }


def main(argv: list[str]) -> int:
    """Check ``argv`` (or, with ``--orch-batch``, the argument lists on stdin)."""
    cli_env_setup()
    if argv == [BATCH]:
        json.dump(batch(json.load(sys.stdin)), _STDOUT, indent=1)
        _STDOUT.write("\n")
        return 0
    result = check(argv)
    if not result["ok"]:
        print(result["error"], file=sys.stderr)
        return int(result["exit_code"]) or 1
    json.dump(result["args"], _STDOUT, indent=1, sort_keys=True)
    _STDOUT.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
