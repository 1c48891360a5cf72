#!/usr/bin/env bash
# Sets everything up from nothing, then opens the course in JupyterLab at notebooks/.
# Headless (no browser, e.g. on a remote machine): bash scripts/course.sh --no-browser
# Any extra arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jupyter lab --notebook-dir=notebooks "$@"
