#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite (the README's test command).
# 1. ruff; 2. every test on the TensorFlow backend, in two pytest-xdist workers (one per core;
# a test file stays in one worker; the files that take minutes start first: conftest.py orders
# them, and --no-loadscope-reorder keeps that order instead of xdist's most-tests-first);
# 3. the layer, DeepLabV3 and surgery tests marked `backends` again on JAX and PyTorch, both at
# once (one per core; each prints its log when it ends).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check .
.venv/bin/python scripts/check_notebooks.py
KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile \
  --no-loadscope-reorder \
  --durations=15 "$@"
logs="$(mktemp -d)"
backends=(jax torch)
pids=()
for backend in "${backends[@]}"; do
  KERAS_BACKEND="$backend" .venv/bin/python -m pytest -q -p no:cacheprovider -m backends \
    tests/test_layers.py tests/test_deeplab.py tests/test_surgery.py >"$logs/$backend.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!backends[@]}"; do
  wait "${pids[$i]}" || status=1
  echo "== layer, segmentation and surgery tests on the ${backends[$i]} backend"
  cat "$logs/${backends[$i]}.log"
done
rm -rf "$logs"
exit "$status"
