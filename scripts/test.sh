#!/usr/bin/env bash
# Sets up .venv when missing, checks lint and generated stubs, runs the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
.venv/bin/ruff check .
# One process by default; QHPO_TEST_WORKERS=2 runs two workers, the modules that start Ray on one of
# them in turn (tests/conftest.py): about 12 instead of 18 minutes, but a Ray start-up timed out in 1
# of 3 such runs on a loaded 2-core machine.
# --durations: the 15 slowest tests end the log, so a CI that grows slower says where.
.venv/bin/python -m pytest -n "${QHPO_TEST_WORKERS:-0}" --dist loadgroup --durations=15 "$@"
