# Sourced by test.sh: make sure PostgreSQL's server programs are here for the tests of the
# database store (tests/pg_cluster.py starts a throwaway cluster of its own; nothing is started
# here, and no system cluster is used). Installs Debian's postgresql with apt when it can, as
# _browser.sh installs chromium; when it is still missing, says why, and the tests that need it
# skip (they fail instead under CLOUDQUEUE_REQUIRE_POSTGRES=1, as in CI).
CLOUDQUEUE_POSTGRES_MISSING=""
. "$(dirname "${BASH_SOURCE[0]}")/_apt.sh"

_have_postgres() {
  [ -n "${CLOUDQUEUE_PG_BINDIR:-}" ] && return 0
  local found
  for found in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$found" ] && return 0
  done
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

if ! _have_postgres; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    echo "installing postgresql for the database store's tests (apt-get) ..." >&2
    _apt_wait=${CLOUDQUEUE_APT_LOCK_TIMEOUT:-120}
    _apt_deadline=$((SECONDS + _apt_wait))
    _apt_update_once || echo "apt-get update failed; trying the install with the package lists at hand" >&2
    # the packages only: Debian's own cluster is not wanted (the tests start theirs)
    if ! _apt_get install -y -qq --no-install-recommends postgresql postgresql-client; then
      CLOUDQUEUE_POSTGRES_MISSING="installing postgresql with apt-get failed (apt's error is above)"
    elif ! _have_postgres; then
      CLOUDQUEUE_POSTGRES_MISSING="apt-get installed postgresql, but there is no initdb"
    fi
  else
    CLOUDQUEUE_POSTGRES_MISSING="no PostgreSQL server, and no way to install it here (it takes apt-get as root or with passwordless sudo)"
  fi
fi
if [ -n "$CLOUDQUEUE_POSTGRES_MISSING" ]; then
  echo "$CLOUDQUEUE_POSTGRES_MISSING: the tests of the PostgreSQL store skip (CLOUDQUEUE_REQUIRE_POSTGRES=1 fails them)" >&2
fi
export CLOUDQUEUE_POSTGRES_MISSING
