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
if [ "$extras" = "dev" ]; then
  # The [mediapipe] extra in a second step: mediapipe 1.2.2 pins absl-py~=2.3, the [qat] extra's
  # tensorflow-model-optimization 0.8.1 absl-py~=1.2, so one resolution cannot hold both. pip
  # upgrades absl-py and reports tfmot's pin as a conflict (exit status 0); tfmot imports absl
  # only in its test utilities.
  .venv/bin/python -m pip install --quiet -e ".[mediapipe]"
fi
echo "keras-coordatt installed in .venv with extras [${extras}]"
