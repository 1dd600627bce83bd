#!/usr/bin/env bash
# Quick start, command 2: install into .venv (with the test extra), and Debian's chromium for the
# browser tests when missing, then run the default tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow lane.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "test"
. "$(dirname "$0")/_browser.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
exec "$PY" -m pytest -p no:cacheprovider "$@"
