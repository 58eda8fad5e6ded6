#!/usr/bin/env bash
# proxy_base: ./run.sh = smoke scale on the CPU (seconds); PROFILE=proxy ./run.sh (one GPU, ~15 minutes in all).
# Chunks: ./run.sh --budget-minutes 8.5 stops with a checkpoint; running it again continues (finished phases kept).
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s setup
exec .venv/bin/python -m cinelora run --config experiments/proxy_base/config.yaml --profile "${PROFILE:-smoke}" "$@"
