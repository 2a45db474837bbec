#!/usr/bin/env bash
# Creates .venv/ in the repository root and installs the project with its dev tools.
# Idempotent: re-running only reinstalls when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [ ! -x .venv/bin/python ]; then
    echo "[bootstrap] creating .venv with $($py --version)" >&2
    "$py" -m venv .venv
fi
stamp=.venv/.qhpo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[bootstrap] installing qhpo and its dependencies into .venv (first time: a few minutes)" >&2
    .venv/bin/python -m pip install -qq --upgrade pip
    # torch first, exactly pinned: the CPU build on CPU machines, the CUDA build where CUDA exists.
    .venv/bin/python -m pip install -qq "torch==2.13.0"
    .venv/bin/python -m pip install -qq -e ".[dev]"
    touch "$stamp"
fi
