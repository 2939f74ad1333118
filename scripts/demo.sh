#!/usr/bin/env bash
# Sets up a fresh machine and runs the main job: the end-to-end demo on bundled real images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "qat,litert"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/keras-coordatt demo "$@"
