#!/usr/bin/env bash
# The dashboard in a real headless browser: builds quicft-server (debug, as `cargo test` left it),
# then runs dashboard_test.py (selenium driving Debian's Chromium through chromedriver) against it.
# Needs: apt-get install chromium chromium-driver; pip install -r tests/browser/requirements.txt
# -r tests/python/requirements.txt (.ci/run installs both). Writes target/dashboard.png.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
for bin in "${CHROMIUM:-/usr/bin/chromium}" "${CHROMEDRIVER:-/usr/bin/chromedriver}"; do
  [ -x "$bin" ] || missing+=("$bin")
done
python3 -c 'import selenium, paho.mqtt' 2>/dev/null || missing+=("python: selenium, paho-mqtt")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/browser/run.sh: missing ${missing[*]}" >&2
  echo "  apt-get install -y chromium chromium-driver" >&2
  echo "  python3 -m pip install -r tests/browser/requirements.txt -r tests/python/requirements.txt" >&2
  exit 1
fi

target="${CARGO_TARGET_DIR:-target}"
server="${QUICFT_SERVER:-}"
if [ -z "$server" ]; then
  cargo build --locked -q -p quicft-server --bin quicft-server
  server="$target/debug/quicft-server"
fi

# Selenium must not look for a driver or browser of its own: both are given.
export SE_OFFLINE=true
timeout 300 python3 tests/browser/dashboard_test.py --server "$server" --screenshot "$target/dashboard.png"
