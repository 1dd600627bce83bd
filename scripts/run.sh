#!/usr/bin/env bash
# Quick start, command 1: install into .venv and run the queue.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" ""
exec "$VENV/bin/cloudqueue" demo "$@"
