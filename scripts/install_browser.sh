#!/usr/bin/env bash
# Debian's chromium + chromedriver for the web demo's browser test (tests/demo/test_web_demo_browser.py);
# `make test` runs it, `make main` does not need it. Offline machines cannot download a browser
# of their own, so the distribution's package is used. Quick when both are already there.
#
#   CLIPZSS_NO_BROWSER=1   do not install (the browser test then skips, except in CI, where
#                          CLIPZSS_REQUIRE_BROWSER=1 makes it fail)
set -euo pipefail
log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

# The web demo's browser test drives Debian's chromium through its chromedriver (no browser
# download works offline). Installed when missing and we may (root, apt-get); two file checks
# when present, so a re-run stays quick.
install_browser() {
    [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] && return 0
    if [[ "${CLIPZSS_NO_BROWSER:-0}" == "1" ]]; then
        log "CLIPZSS_NO_BROWSER=1: not installing chromium (the browser test will skip)"
    elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing Debian's chromium and chromium-driver (web demo browser test)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium chromium-driver >/dev/null \
            || die "apt-get could not install chromium chromium-driver (set CLIPZSS_NO_BROWSER=1 to skip)"
    else
        log "chromium + chromedriver missing and not root with apt-get: the browser test will skip" \
            "(as root: apt-get install chromium chromium-driver)"
    fi
}
install_browser
