#!/usr/bin/env bash
# rlpips_metric: ./run.sh = smoke scale on the CPU; PROFILE=proxy ./run.sh (one GPU); PROFILE=full ./run.sh (BAPPS + ImageNet trunk).
# Running it again resumes an unfinished run (saved heads are kept; heads in training go on from their last whole
# epoch); finished results are kept unless you pass --force.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s setup
exec .venv/bin/python -m cinelora run --config experiments/rlpips_metric/config.yaml --profile "${PROFILE:-smoke}" "$@"
