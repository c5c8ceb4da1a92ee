#!/usr/bin/env bash
# Install the browser the web page's tests drive, when missing: Debian's chromium, its
# matching chromium-driver (/usr/bin/chromedriver, which selenium is pointed at), and NSS's
# certutil (libnss3-tools), with which a test makes chromium trust the test's own CA.
# Best effort: without them tests/integration/test_web_page.py skips with a reason.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v certutil >/dev/null || missing+=(libnss3-tools)
exec bash "$(dirname "$0")/apt-install.sh" "the web page's browser tests skip" "${missing[@]}"
