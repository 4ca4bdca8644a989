#!/usr/bin/env bash
# Install ZSSD Explorer and serve the dashboard on the embedded demo (http://localhost:5006/app).
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m zssd_engine.cli serve "$@"
