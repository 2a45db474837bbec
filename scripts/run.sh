#!/usr/bin/env bash
# The main job: sets up .venv when missing, then runs the digits HPO study on Ray Tune
# (Swift-ASHA, real torch models, the gateway started on its embedded default: neal, SQLite).
# Each run starts the study over in results/digits/ (--overwrite), unless it is given --resume
# (continue an interrupted run) or --overwrite itself.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
again=(--overwrite)
for arg in "$@"; do
    if [[ "$arg" == "--resume" || "$arg" == "--overwrite" ]]; then
        again=()
    fi
done
exec .venv/bin/hpo-node run examples/digits.toml ${again[@]+"${again[@]}"} "$@"
