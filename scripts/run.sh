#!/usr/bin/env bash
# The main job: sets up .venv when missing, then runs the gateway + HPO demo end to end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
exec .venv/bin/python examples/gateway_demo.py "$@"
