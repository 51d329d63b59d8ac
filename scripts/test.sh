#!/usr/bin/env bash
# Set up (or reuse) .venv, lint, and run the whole test suite. Extra arguments go to pytest.
# The tests run in parallel, one pytest-xdist worker per CPU core (at most 8); `-n 0` runs them in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check normzoo tests scripts
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
.venv/bin/python -m pytest -n "$(( cores > 8 ? 8 : cores ))" "$@"
