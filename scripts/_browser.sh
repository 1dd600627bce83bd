# Sourced by test.sh: make sure Debian's chromium is here for the browser tests (pytest -m browser,
# in tests/examples/test_template_install.py). Installs it with apt when it can (root or
# passwordless sudo), waiting up to CLOUDQUEUE_APT_LOCK_TIMEOUT seconds (120) for apt's locks
# while another apt or dpkg holds them. Never stops the run: when chromium is still missing it
# says why and exports the reason as CLOUDQUEUE_BROWSER_MISSING, and the browser tests skip
# (they fail instead under CLOUDQUEUE_REQUIRE_BROWSER=1, as in CI).
CLOUDQUEUE_BROWSER_MISSING=""
. "$(dirname "${BASH_SOURCE[0]}")/_apt.sh"

if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    echo "installing chromium for the browser tests (apt-get) ..." >&2
    _apt_wait=${CLOUDQUEUE_APT_LOCK_TIMEOUT:-120}
    _apt_deadline=$((SECONDS + _apt_wait))
    if ! _apt_update_once; then
      echo "apt-get update failed; trying the install with the package lists at hand" >&2
    fi
    _apt_lock_held=""
    if ! _apt_get install -y -qq chromium; then
      if [ -n "$_apt_lock_held" ]; then
        CLOUDQUEUE_BROWSER_MISSING="installing chromium failed: another process held apt's lock for more than $_apt_wait s"
      else
        CLOUDQUEUE_BROWSER_MISSING="installing chromium with apt-get failed (apt's error is above)"
      fi
    elif ! command -v chromium >/dev/null 2>&1; then
      CLOUDQUEUE_BROWSER_MISSING="apt-get installed chromium, but there is no chromium command"
    fi
  else
    CLOUDQUEUE_BROWSER_MISSING="no chromium, and no way to install it here (it takes apt-get as root or with passwordless sudo)"
  fi
fi
export CLOUDQUEUE_BROWSER_MISSING
