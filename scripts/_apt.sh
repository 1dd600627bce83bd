# Sourced by _browser.sh and _postgres.sh: apt-get as root (or with passwordless sudo).
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
fi
_apt_updated="${_apt_updated:-}"

# apt-get "$@" as root, quiet, within the lock deadline: dpkg's lock is waited for by apt itself
# (DPkg::Lock::Timeout); the package lists' and archives' locks are not, so a refusal naming a
# lock is retried each second until the deadline. Anything else fails at once, apt's error shown.
_apt_get() {
  local err left waiting=""
  while :; do
    left=$((_apt_deadline - SECONDS))
    [ "$left" -ge 0 ] || left=0
    if err="$($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$left" \
                "$@" 2>&1 >/dev/null)"; then
      return 0
    fi
    if [[ "$err" == *"Could not get lock"* ]] && [ "$SECONDS" -lt "$_apt_deadline" ]; then
      if [ -z "$waiting" ]; then
        echo "apt's lock is held by another process; waiting up to $left s for it ..." >&2
        waiting=1
      fi
      sleep 1
      continue
    fi
    printf '%s\n' "$err" >&2
    [[ "$err" != *"Could not get lock"* ]] || _apt_lock_held=1
    return 1
  done
}

# apt-get update once per run (a second package's install reuses the lists)
_apt_update_once() {
  [ -n "$_apt_updated" ] && return 0
  _apt_updated=1
  _apt_get update -qq
}
