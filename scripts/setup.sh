#!/usr/bin/env bash
# Sets up everything the course needs, from nothing: a virtual environment in .venv with the
# pinned packages of requirements.lock and the course package itself. Safe to run again: it
# does nothing when .venv already matches the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.lock-sha256"
want=$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "Setting up $VENV from requirements.lock (a few minutes the first time)..."
"$PYTHON" -m venv "$VENV"
# torch first and pinned: an unpinned torch would pull the CUDA build (gigabytes). On Linux
# without an NVIDIA GPU, torch_index.py names PyTorch's CPU index when the configured index
# would serve the CUDA build, and nothing where it already serves the CPU one.
# (pip asks itself with --dry-run --report, which needs a pip newer than some Pythons bundle.)
"$VENV/bin/python" -m pip install --quiet "pip>=23.1"
read -r -a torch_index <<< "$("$VENV/bin/python" scripts/torch_index.py torch==2.13.0)"
"$VENV/bin/pip" install --quiet torch==2.13.0 ${torch_index[@]+"${torch_index[@]}"}
"$VENV/bin/pip" install --quiet -r requirements.lock
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "Setup done."
