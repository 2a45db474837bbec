#!/usr/bin/env bash
# Sets up .venv when missing, checks lint and generated stubs, runs the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
.venv/bin/ruff check .
# Two workers (QHPO_TEST_WORKERS; 0 runs in this process); the modules that start Ray share one
# worker, in turn (tests/conftest.py).
.venv/bin/python -m pytest -n "${QHPO_TEST_WORKERS:-2}" --dist loadgroup "$@"
