#!/usr/bin/env bash
# Quick start, command 1: install into .venv and run the queue server on the embedded log
# (./data). Arguments go to `cloudqueue serve`, e.g. --function-host http://127.0.0.1:3000.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" ""
exec "$VENV/bin/cloudqueue" serve "$@"
