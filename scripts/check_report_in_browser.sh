#!/usr/bin/env bash
# Render an e3d_stream report.html in headless Chromium and save a screenshot, to look at.
#
#   scripts/check_report_in_browser.sh REPORT.html [SCREENSHOT.png] [WIDTHxHEIGHT]
#
# Prints the screenshot's path on success. Exits 0 with a "skipped" message when
# no Chromium is installed (Debian: apt-get install -y chromium). The page must
# render on its own: it is opened from file:// with networking disabled, so an
# image or style that is not embedded shows up as missing in the screenshot.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
    echo "usage: $0 REPORT.html [SCREENSHOT.png] [WIDTHxHEIGHT]" >&2
    exit 2
fi
report=$1
shot=${2:-${TMPDIR:-/tmp}/report.png}
size=${3:-1400x3000}

browser=""
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        browser=$(command -v "$name")
        break
    fi
done
if [ -z "$browser" ]; then
    echo "skipped: no chromium found (Debian: apt-get install -y chromium)"
    exit 0
fi
if [ ! -f "$report" ]; then
    echo "error: no such report: $report" >&2
    exit 1
fi

report_abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
mkdir -p "$(dirname "$shot")"
shot_abs=$(cd "$(dirname "$shot")" && pwd)/$(basename "$shot")
rm -f "$shot_abs"
# A throwaway profile keeps the check from touching (or depending on) the user's browser state;
# --no-sandbox because CI containers run as root.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
log="$profile/chromium.log"
if ! timeout 120 "$browser" --headless --disable-gpu --no-sandbox --hide-scrollbars --no-first-run \
        --user-data-dir="$profile" --proxy-server="127.0.0.1:9" --proxy-bypass-list="<-loopback>" \
        --screenshot="$shot_abs" --window-size="${size/x/,}" "file://$report_abs" >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: chromium failed" >&2
    exit 1
fi
if [ ! -s "$shot_abs" ]; then
    cat "$log" >&2
    echo "error: chromium wrote no screenshot" >&2
    exit 1
fi
echo "$shot_abs"
