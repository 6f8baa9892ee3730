#!/usr/bin/env bash
# Install vLLM's own `vllm serve` argument parser into .venv-vllm/, on a machine with no GPU.
#
# tests/test_vllm_args.py runs tests/vllm_argcheck.py with this venv's python to parse the
# vLLM command lines orch renders with vLLM's real parser. Only what importing
# vllm.entrypoints.cli.serve needs is installed, every package pinned and with --no-deps
# (vLLM's full dependency set pulls CUDA wheels, triton and kernels worth many GB):
# the CPU build of torch, the vLLM wheel itself and ~70 small pure-Python or manylinux wheels.
# About 2.2 GB on disk. Idempotent: a venv whose stamp matches the pins is left alone.
# The last line printed is the venv's python.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=$(realpath -m "${ORCH_VLLM_VENV:-.venv-vllm}")
PYTHON=${PYTHON:-python3}

# vLLM 0.33.0 is the release orchestrator/data/flags-vllm.txt was written against.
# torch: vLLM 0.33.0 asks for 2.14.0; any 2.x imports for argument parsing, and 2.13.0 is
# the CPU build this project's machines keep on disk (elsewhere pip may fetch a CUDA build).
PINS=(
  vllm==0.33.0
  torch==2.13.0
  aiohappyeyeballs==2.7.1
  aiohttp==3.14.5
  aiosignal==1.4.0
  annotated-doc==0.0.7
  annotated-types==0.8.0
  anyio==4.16.0
  apache-tvm-ffi==0.1.11
  attrs==26.1.0
  cachetools==8.0.1
  cbor2==6.3.0
  certifi==2026.10.18
  charset-normalizer==3.5.2
  click==8.5.1
  cloudpickle==3.1.2
  fastapi==0.136.3
  filelock==4.2.12
  frozenlist==1.8.0
  fsspec==2026.9.0
  h11==0.16.0
  hf-xet==1.8.0
  httpcore2==2.16.2
  httpx2==2.16.2
  huggingface-hub==2.4.0
  idna==3.20
  jinja2==3.1.6
  jiter==0.19.0
  llguidance==1.7.6
  markdown-it-py==4.3.0
  markupsafe==3.0.4
  mdurl==0.1.2
  mpmath==1.3.0
  msgspec==0.22.0
  multidict==7.2.1
  networkx==3.6.1
  numpy==2.4.6
  openai==3.54.0
  orjson==3.13.0
  oss-harmony==0.0.11
  packaging==26.3
  partial-json-parser==0.2.1.1.post7
  pillow==13.0.0
  prometheus-client==0.26.0
  propcache==0.5.4
  psutil==7.2.2
  py-cpuinfo==9.0.0
  pybase64==1.5.1
  pydantic==2.14.3
  pydantic-core==2.50.4
  pygments==2.21.0
  pyyaml==6.0.3
  pyzmq==27.3.0
  regex==2026.11.15
  requests==2.34.2
  rich==15.0.0
  safetensors==0.8.0
  shellingham==1.5.4
  sniffio==1.3.1
  starlette==1.10.0
  sympy==1.14.0
  tokenizers==0.23.3
  tqdm==4.70.1
  transformers==5.20.2
  truststore==0.10.5
  typer==0.29.2
  typing-extensions==4.16.0
  typing-inspection==0.4.5
  urllib3==2.8.0
  uvicorn==0.54.0
  uvloop==0.23.0
  watchfiles==1.3.0
  xgrammar==0.2.8
  yarl==1.25.1
)

stamp="$VENV/.orch-argparser-$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)"
if [[ -f $stamp && -x $VENV/bin/python ]]; then
  echo "vllm argument parser: $VENV is up to date" >&2
  echo "$VENV/bin/python"
  exit 0
fi

echo "vllm argument parser: creating $VENV (vllm, torch CPU, ~2.2 GB; a few minutes)" >&2
if [[ -e $VENV && ! -f $VENV/pyvenv.cfg ]]; then
  echo "vllm argument parser: $VENV exists and is not a venv; not touching it" >&2
  exit 1
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
if ! "$VENV/bin/python" -m pip install --quiet --no-deps --disable-pip-version-check \
  "${PINS[@]}" >"$VENV/pip.log" 2>&1; then
  tail -n 40 "$VENV/pip.log" >&2
  echo "vllm argument parser: pip install failed (log: $VENV/pip.log)" >&2
  exit 1
fi

# Smoke test: build the real serve parser, accept a plain command line, reject a bogus flag.
if ! "$VENV/bin/python" tests/vllm_argcheck.py some/model --max-model-len 1024 >/dev/null; then
  echo "vllm argument parser: $VENV cannot parse a plain vllm serve command line" >&2
  exit 1
fi
if "$VENV/bin/python" tests/vllm_argcheck.py some/model --orch-no-such-flag >/dev/null 2>&1; then
  echo "vllm argument parser: $VENV accepted a bogus flag" >&2
  exit 1
fi
touch "$stamp"
echo "$VENV/bin/python"
