#!/usr/bin/env bash
# The system tools the web client's tests run: Debian's Chromium (driven headless by Playwright)
# and acorn (node-acorn: the ES5 syntax check). Installed with apt-get when missing and this user
# is root; otherwise it says why and exits 0, and those tests skip with the same reason.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v acorn >/dev/null || missing+=(node-acorn)
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "browser tools: ${missing[*]} missing and this user cannot install Debian packages: the web client's tests skip" >&2
    exit 0
fi
echo "browser tools: installing Debian's ${missing[*]}" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
