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
# torch first and pinned: an unpinned torch would pull the CUDA build (gigabytes).
"$VENV/bin/pip" install --quiet torch==2.13.0
"$VENV/bin/pip" install --quiet -r requirements.lock
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "Setup done."
