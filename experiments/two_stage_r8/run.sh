#!/usr/bin/env bash
# two_stage_r8: ./run.sh = smoke scale on the CPU; PROFILE=proxy ./run.sh (one GPU); PROFILE=full ./run.sh (real weights).
# Running it again resumes an unfinished run; finished results are kept unless you pass --force.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s setup
exec .venv/bin/python -m cinelora run --config experiments/two_stage_r8/config.yaml --profile "${PROFILE:-smoke}" "$@"
