#!/usr/bin/env bash
# Set up .venv and train the quickstart: a BatchNorm MLP on the embedded MNIST-5k digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/normzoo fit --config configs/quickstart.yaml "$@"
