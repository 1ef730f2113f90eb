#!/usr/bin/env bash
# Smoke test of the benchmark kit, for CI: bring up the `lte` link on linkem, check that it delays,
# rate-limits and reports as its profile says, run the comparison with a tiny file (quicft over QUIC and
# TLS with telemetry, the quicft CLI, HTTPS PUT), and leave nothing behind. Needs root, /dev/net/tun,
# curl, nginx, openssl, python3 (and ping, if installed); about 20 s once the release binaries
# (quicft-server, quicft, quicft-bench, linkem) are built, which run.sh does if they are not.
# Prints "smoke: N passed, M failed" and exits non-zero on a failure.
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

# A 1 MiB upload by each method through the link, once: the comparison table with a tiny file. HTTPS
# goes last: the linkem report checked below is of the last run.
results=$(mktemp -d)
out=$(QFT_RESULTS=$results QFT_RUNS=1 QFT_KEEP=1 QFT_IDLE_S=2 QFT_METHODS="${QFT_SMOKE_METHODS:-quic tls cli idle https}" "$BENCH/netem.sh" run lte 1M 2>/dev/null)
echo "$out"
json=$(find "$results" -name '*.json' | head -1)
# curl's TCP connect time is one round trip.
conn=$(python3 -c 'import json, sys; print([r for r in json.load(open(sys.argv[1]))["runs"] if r["method"] == "https"][0]["connect_s"])' "$json" 2>/dev/null)
check "TCP handshake ${conn:-none} s is one 40 ms RTT" awk -v c="${conn:-0}" 'BEGIN { exit !(c >= 0.040 && c < 0.050) }'
# shellcheck disable=SC2016 # expanded by the inner shell
check "run prints the HTTPS row" bash -c 'grep -q "^| HTTPS PUT" <<<"$1"' _ "$out"
secs=$(awk -F'|' '/^\| HTTPS PUT/ {gsub(/ /, "", $4); print $4}' <<<"$out")
# 1 MiB at 20 Mbit/s is 0.42 s of transfer; with handshakes and slow start, under 3 s.
check "1 MiB HTTPS PUT took ${secs:-?} s (0.4..3)" awk -v s="${secs:-0}" 'BEGIN { exit !(s >= 0.4 && s < 3) }'
case " ${QFT_SMOKE_METHODS:-quic tls cli idle https} " in
*" quic "*)
	# Every run succeeded and the quicft ones carried telemetry, all of it acknowledged, at a latency
	# no lower than the link's RTT.
	check "every run ok, quicft telemetry acknowledged" python3 - "$json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for r in doc["runs"]:
    assert r["ok"], (r["method"], r)
    if r["method"] == "idle":
        # Telemetry alone for 2 s: ~20 messages, all acknowledged, no faster than the 40 ms RTT.
        t = r["telemetry"]
        assert t["sent"] >= 10 and t["acked"] == t["sent"], t
        assert 40 <= t["p50_ms"] < 100, t
        continue
    assert 0.4 <= r["seconds"] < 5, (r["method"], r["seconds"])
    if r["method"] in ("quic", "tls", "https"):
        t = r["telemetry"]
        assert t["sent"] >= 2 and t["acked"] == t["sent"], (r["method"], t)
        assert 40 <= t["p50_ms"] < 1000 and t["idle_p50_ms"] >= 40, (r["method"], t)
    if r["method"] in ("quic", "tls", "cli"):
        assert r["bytes"] == doc["bytes"] and r["bytes_resent"] == 0, r
PY
	# shellcheck disable=SC2016
	check "run prints the quicft rows" bash -c 'grep -q "^| quicft over QUIC" <<<"$1" && grep -q "^| quicft over TLS" <<<"$1"' _ "$out"
	# shellcheck disable=SC2016
	check "run prints the idle row" bash -c 'grep -q "^| no upload: telemetry alone" <<<"$1"' _ "$out"
	;;
esac
rm -rf "$results"

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
