#!/usr/bin/env bash
# Create .venv and install yollava with everything it needs (torch pinned to the CPU build 2.13.0).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
# the web page's browser test drives Debian's Chromium; best effort (the test says why it skips without it)
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[serve,ray,test]"
echo "installed: $(.venv/bin/yollava --version 2>/dev/null || echo yollava) in $(pwd)/.venv"
