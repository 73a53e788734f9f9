#!/usr/bin/env bash
# The test command of the README: sets up ./.venv with the test extras, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/setup_venv.sh test | tail -n 1)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  # the HTML-report test opens the page in headless Chromium (Debian package); skipped if it cannot install
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed; browser tests will skip"
fi
exec "$VENV/bin/python" -m pytest "$@"
