#!/usr/bin/env bash
# Installs batchflow with its test extras into .venv (when missing) and runs every check CI runs:
# lint, types, a small benchmark run, the emulator conformance suite and the tests.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"
ruff check batchflow benchmarks tests scripts
mypy
# the benchmark at a small size, as a smoke test: every case runs, nothing is timed against a target
python -m benchmarks.bench --records 20000 --repeat 1 --quick
pytest "$@"
