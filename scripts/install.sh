#!/usr/bin/env bash
# Install ZSSD Explorer into the current Python (3.11+) environment.
#   EXTRAS=test  also installs the test tools (pytest, playwright, the peer libraries) and, as root
#                with apt-get, Debian's chromium for the browser tests.
#   TORCH_SPEC   how to get torch when it is missing (default torch==2.13.0, the CPU wheel of this
#                project's machines; use your own index/spec elsewhere, e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
if [ "${EXTRAS:-}" = "test" ]; then
  "$PY" -m pip install -q -e ".[test]"
  if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  fi
else
  "$PY" -m pip install -q -e .
fi
