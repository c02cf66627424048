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
# two workers (pytest-xdist): CI has two cores; BATCHFLOW_TEST_WORKERS=0 runs the tests in this process
pytest -n "${BATCHFLOW_TEST_WORKERS:-2}" "$@"
# google-genai 2.x beside 3.x: google-cloud-aiplatform pins the SDK below 3, so a user who has it installed runs
# batchflow on 2.x. With no arguments, the SDK-facing tests run again there, in a venv of their own (.venv-sdk2),
# with aiplatform's own test that needs it.
if [ "$#" -eq 0 ]; then
  [ -x .venv-sdk2/bin/python ] || "${PYTHON:-python3}" -m venv .venv-sdk2
  .venv-sdk2/bin/python -m pip install -q --disable-pip-version-check -e '.[test,test-sdk2]'
  .venv-sdk2/bin/python -c 'import google.genai as g; assert g.__version__.startswith("2."), g.__version__'
  PATH="$PWD/.venv-sdk2/bin:$PATH" .venv-sdk2/bin/pytest -q -n "${BATCHFLOW_TEST_WORKERS:-2}" -m "not slow" \
    tests/backends tests/libs/test_refusals.py tests/emulator/test_aiplatform_client.py \
    tests/emulator/test_emulator_hangs.py tests/e2e/test_media_run.py \
    tests/emulator/test_emulator_vertex.py::test_conformance_script_passes_with_vertex
fi
