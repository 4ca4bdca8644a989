#!/usr/bin/env bash
# Install ZSSD Explorer and serve the dashboard on the embedded demo (http://localhost:5006/app).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m engine.cli serve "$@"
