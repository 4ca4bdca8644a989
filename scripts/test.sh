#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (slow and browser tests included).
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/install.sh
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@"
