#!/usr/bin/env bash
# The browser test: every notebook run in JupyterLab in headless Chromium, as a learner runs
# it (tests/browser/browser_notebooks.py says what it checks). Sets up .venv like test.sh,
# and on Linux installs Debian's chromium and chromium-driver (a matching pair) when either
# is missing. Screenshots of every widget: tests/_browser_screenshots/. Extra arguments go to
# pytest, e.g. -k 01_toy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v "${CHROMIUM:-chromium}" >/dev/null || ! command -v "${CHROMEDRIVER:-chromedriver}" >/dev/null; then
  if [ "$(uname -s)" != Linux ] || ! command -v apt-get >/dev/null; then
    echo "The browser test needs Chromium and its matching chromedriver: set CHROMIUM and" >&2
    echo "CHROMEDRIVER to their paths (on Debian or Ubuntu this script installs them)." >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  echo "Installing chromium and chromium-driver with apt-get..."
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
export CHROMIUM="$(command -v "${CHROMIUM:-chromium}")"
export CHROMEDRIVER="$(command -v "${CHROMEDRIVER:-chromedriver}")"
export SAE_COURSE_BUDGET=ci SAE_COURSE_MODEL=offline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export SE_OFFLINE=true  # Selenium Manager must never download a browser or a driver
exec .venv/bin/python -m pytest tests/browser/browser_notebooks.py --durations=0 "$@"
