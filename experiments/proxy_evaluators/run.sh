#!/usr/bin/env bash
# proxy_evaluators: ./run.sh = smoke scale on the CPU (seconds); PROFILE=proxy ./run.sh (one GPU, ~8 minutes).
# Chunks: ./run.sh --budget-minutes 8.5 stops with a checkpoint; running it again continues (finished evaluators kept).
# Then experiments/rlpips_metric at the same profile trains the LPIPS and R-LPIPS heads on the trunk written here.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s setup
exec .venv/bin/python -m cinelora run --config experiments/proxy_evaluators/config.yaml --profile "${PROFILE:-smoke}" "$@"
