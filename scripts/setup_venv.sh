#!/usr/bin/env bash
# Create ./.venv (once) and install gpfm with the given extras. Offline-friendly: pip takes torch/torchvision
# from the local wheel store where the machine has one, and everything else from the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
VENV="${GPFM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.gpfm-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # torch first, pinned to the wheels that lie on this machine's disk (a CPU or CUDA build both work)
  "$VENV/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" \
    || "$VENV/bin/python" -m pip install --quiet torch torchvision
  "$VENV/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
echo "$VENV"
