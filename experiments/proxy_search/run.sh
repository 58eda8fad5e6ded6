#!/usr/bin/env bash
# proxy_search: ./run.sh = smoke scale on the CPU (a pipeline check); PROFILE=proxy ./run.sh (one GPU), in chunks
# with --budget-minutes M. Running it again continues: finished grid points are kept; --force starts it again.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s setup
exec .venv/bin/python -m cinelora run --config experiments/proxy_search/config.yaml --profile "${PROFILE:-smoke}" "$@"
