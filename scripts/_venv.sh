# Sourced by the other scripts: make (or reuse) the project's virtualenv and install into it.
# Usage: . scripts/_venv.sh EXTRA   (EXTRA: "" for the runtime only, "test" for the test tools)
# The install is skipped when nothing it depends on changed since the last one (pyproject.toml,
# the extra asked for, the Python): a second `scripts/run.sh` starts at once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLOUDQUEUE_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
spec="$ROOT"
[ -n "${1:-}" ] && spec="$ROOT[$1]"
stamp="$VENV/.cloudqueue-installed-${1:-runtime}"
wanted="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.argv[2].encode() + sys.version.encode()).hexdigest())' "$ROOT/pyproject.toml" "$spec")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
  echo "$wanted" > "$stamp"
fi
PY="$VENV/bin/python"
