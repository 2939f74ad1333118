#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs keras-coordatt with the given extras (default: dev).
# Usage: bash scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
echo "keras-coordatt installed in .venv with extras [${extras}]"
