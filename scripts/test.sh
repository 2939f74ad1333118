#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite (the README's test command).
# 1. ruff; 2. every test on the TensorFlow backend, in two pytest-xdist workers (one per core;
# a test file stays in one worker; the files that take minutes start first: conftest.py orders
# them, and --no-loadscope-reorder keeps that order instead of xdist's most-tests-first);
# 3. the layer, DeepLabV3 and surgery tests marked `backends` again on JAX and PyTorch. These two
# start together with step 2, at a lower CPU priority (nice): they take the cores whenever the
# TensorFlow run leaves one idle (a worker between files, the last file of one worker) and run
# at full speed once it ends. Their logs are printed after the TensorFlow run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check .
.venv/bin/python scripts/check_notebooks.py
logs="$(mktemp -d)"
backends=(jax torch)
pids=()
for backend in "${backends[@]}"; do
  KERAS_BACKEND="$backend" nice -n 10 .venv/bin/python -m pytest -q -p no:cacheprovider \
    -m backends tests/test_layers.py tests/test_deeplab.py tests/test_surgery.py \
    >"$logs/$backend.log" 2>&1 &
  pids+=($!)
done
status=0
KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile \
  --no-loadscope-reorder \
  --durations=15 "$@" || status=1
for i in "${!backends[@]}"; do
  wait "${pids[$i]}" || status=1
  echo "== layer, segmentation and surgery tests on the ${backends[$i]} backend"
  cat "$logs/${backends[$i]}.log"
done
rm -rf "$logs"
exit "$status"
