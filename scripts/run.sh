#!/usr/bin/env bash
# Quick start, command 1: install into .venv and run the queue server on the embedded log
# (./data), with the example functions of examples/tasks.py run in-process. Arguments go to
# `cloudqueue serve`, e.g. --function-host http://127.0.0.1:3000 or --functions tasks.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" ""
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/cloudqueue" serve --functions examples.tasks "$@"
