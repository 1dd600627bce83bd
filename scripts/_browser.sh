# Sourced by test.sh: make sure Debian's chromium is here for the browser tests
# (tests/examples/test_template_install.py). Installs it with apt when it can (root or
# passwordless sudo); otherwise says so, and those tests skip unless CLOUDQUEUE_REQUIRE_BROWSER=1.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    echo "installing chromium for the browser tests (apt-get) ..." >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "no chromium and no way to install it: the browser tests will skip" >&2
  fi
fi
