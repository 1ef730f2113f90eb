#!/usr/bin/env bash
# Smoke test of the benchmark kit, for CI: bring up the `lte` link on linkem, check that it delays,
# rate-limits and reports as its profile says, run the comparison with a tiny file, and leave nothing
# behind. Needs root, /dev/net/tun, curl, nginx, openssl, python3 (and ping, if installed); takes one to
# two minutes, most of it the release build of linkem. Prints "smoke: N passed, M failed" and exits non-zero on a failure.
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${QFT_STATE:-/run/qft-bench}
export QFT_STATE=$STATE QFT_EMU=linkem
pass=0
fail=0
check() {
	local what=$1
	shift
	if "$@"; then
		echo "ok   $what"
		pass=$((pass + 1))
	else
		echo "FAIL $what"
		fail=$((fail + 1))
	fi
}

if [ "$(id -u)" -ne 0 ] || [ ! -c /dev/net/tun ]; then
	if [ "${CI:-}" = true ]; then
		echo "smoke: FAILED: CI must run as root with /dev/net/tun"
		exit 1
	fi
	echo "smoke: skipped (needs root and /dev/net/tun)"
	echo "smoke: 0 passed, 0 failed"
	exit 0
fi
trap '"$BENCH/netem.sh" down >/dev/null 2>&1' EXIT

check "netem.sh up lte" "$BENCH/netem.sh" up lte
check "qft-dev and qft-srv exist" bash -c 'ip netns list | grep -q qft-dev && ip netns list | grep -q qft-srv'

# RTT 40 ms: the average of 10 pings within 40..45 ms (where ping is installed; the TCP handshake
# time below checks the RTT too).
if command -v ping >/dev/null; then
	rtt=$(ip netns exec qft-dev ping -q -c 10 -i 0.05 198.18.0.2 | awk -F/ '/^rtt/ {print $5}')
	check "ping rtt ${rtt:-none} ms is 40 ms" awk -v r="${rtt:-0}" 'BEGIN { exit !(r >= 40 && r < 45) }'
fi

# A 1 MiB upload over HTTPS through the link, then the comparison table with a tiny file.
results=$(mktemp -d)
out=$(QFT_RESULTS=$results QFT_RUNS=1 QFT_KEEP=1 QFT_METHODS="${QFT_SMOKE_METHODS:-https}" "$BENCH/netem.sh" run lte 1M 2>/dev/null)
echo "$out"
# curl's TCP connect time is one round trip.
conn=$(cat "$results"/*.json 2>/dev/null | grep -o '"connect_s":[0-9.]*' | head -1 | cut -d: -f2)
check "TCP handshake ${conn:-none} s is one 40 ms RTT" awk -v c="${conn:-0}" 'BEGIN { exit !(c >= 0.040 && c < 0.050) }'
rm -rf "$results"
# shellcheck disable=SC2016 # expanded by the inner shell
check "run prints the HTTPS row" bash -c 'grep -q "^| HTTPS PUT" <<<"$1"' _ "$out"
secs=$(awk -F'|' '/^\| HTTPS PUT/ {gsub(/ /, "", $4); print $4}' <<<"$out")
# 1 MiB at 20 Mbit/s is 0.42 s of transfer; with handshakes and slow start, under 3 s.
check "1 MiB HTTPS PUT took ${secs:-?} s (0.4..3)" awk -v s="${secs:-0}" 'BEGIN { exit !(s >= 0.4 && s < 3) }'

# linkem's report: it saw the traffic, lost nothing, never exceeded 20 Mbit/s in a second.
sleep 1.2
check "linkem report is valid" python3 - "$STATE/linkem.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
up = r["up"]
assert up["capacity_mbit"] == 20.0, up["capacity_mbit"]
assert up["packets_out"] > 500, up["packets_out"]
assert up["drops"]["total"] == 0, up["drops"]
assert max(up["per_second_mbit"]) <= 20.01, up["per_second_mbit"]
assert 19.5 <= up["delay_ms"]["p50"] <= 120, up["delay_ms"]
PY

"$BENCH/netem.sh" down
check "down removes the namespaces" bash -c '! ip netns list | grep -q "qft-"'
# shellcheck disable=SC2016
check "down stops linkem" bash -c '[ ! -e "$1/linkem.pid" ]' _ "$STATE"

echo "smoke: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
