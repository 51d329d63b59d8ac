#!/usr/bin/env bash
# Set up (or reuse) .venv, lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check normzoo tests scripts
.venv/bin/python -m pytest "$@"
