#!/usr/bin/env bash
# Quick start, command 2: install into .venv (with the test extra), and Debian's postgresql (for
# the database store's tests) and chromium (for the browser tests) when missing, then run the
# default tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow lane.
# When chromium cannot be installed (apt's lock held too long, no network, no root), the other
# tests still run, and the last lines say which tests skipped and why.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "test"
. "$(dirname "$0")/_browser.sh"
. "$(dirname "$0")/_postgres.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
if [ -z "$CLOUDQUEUE_BROWSER_MISSING" ]; then
  exec "$PY" -m pytest -p no:cacheprovider "$@"
fi
browser_note() {
  if [ -n "${CLOUDQUEUE_REQUIRE_BROWSER:-}" ]; then
    echo "$CLOUDQUEUE_BROWSER_MISSING: the browser tests (pytest -m browser) fail, as" \
         "CLOUDQUEUE_REQUIRE_BROWSER is set" >&2
  else
    echo "$CLOUDQUEUE_BROWSER_MISSING: the browser tests (pytest -m browser) skip; with" \
         "chromium installed (apt-get install chromium), run them: scripts/test.sh -m browser" >&2
  fi
}
browser_note
status=0
"$PY" -m pytest -p no:cacheprovider "$@" || status=$?
browser_note
exit "$status"
