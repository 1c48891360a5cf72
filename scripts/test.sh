#!/usr/bin/env bash
# Sets everything up from nothing, then runs the whole test suite: the library tests, the
# meta-tests of the exercise checks, and every notebook (nbval) on the offline model with
# the `ci` budget. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SAE_COURSE_BUDGET=ci SAE_COURSE_MODEL=offline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest --durations=25 "$@"
