#!/usr/bin/env bash
# The main job: sets up .venv when missing, then runs the digits HPO study on Ray Tune
# (Swift-ASHA, real torch models, the gateway started on its embedded default: neal, SQLite).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
exec .venv/bin/hpo-node run examples/digits.toml "$@"
