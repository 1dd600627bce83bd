# Sourced by the other scripts: make (or reuse) the project's virtualenv and install into it.
# Usage: . scripts/_venv.sh EXTRA   (EXTRA: "" for the runtime only, "test" for the test tools)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLOUDQUEUE_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
spec="$ROOT"
[ -n "${1:-}" ] && spec="$ROOT[$1]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
PY="$VENV/bin/python"
