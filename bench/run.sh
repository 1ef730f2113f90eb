#!/usr/bin/env bash
# The comparison on one emulated link: quicft over QUIC, quicft over TLS/TCP, and HTTPS PUT with curl to
# nginx, each QFT_RUNS times (default 3) with the same file. Called by `bench/netem.sh run PROFILE
# [SIZE]`; run as root.
#
# Prints a markdown table and writes every run as JSON to bench/results/PROFILE-SIZE-TIME.json.
#
# Environment: QFT_RUNS, QFT_METHODS (default "quic tls https"), QFT_KEEP=1 leaves the link up
# afterwards, QFT_BIN_DIR (where quicft and quicft-server are; default: a release build of them).
#
# Phase 1 status: the HTTPS baseline is complete; the quicft legs run once `quicft upload --json`
# exists (issue 4) and are reported as "not available" until then.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The profile parser, rate_bps, TRACES, STATE... (sourcing runs no command).
# shellcheck source=netem.sh
source "$HERE/netem.sh"
RUNS=${QFT_RUNS:-3}
METHODS=${QFT_METHODS:-quic tls https}
RESULTS=${QFT_RESULTS:-$HERE/results}
SRV_IP=198.18.0.2

say() { echo "run.sh: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 PROFILE [SIZE]"
PROFILE=$1
SIZE=${2:-20M}
[ "$(id -u)" -eq 0 ] || die "must run as root"
load_profile "$PROFILE"

cleanup() {
	"$HERE/nginx-put.sh" stop >/dev/null 2>&1 || true
	stop_quicft_server
	[ "${QFT_KEEP:-0}" = 1 ] || "$HERE/netem.sh" down
	[ -z "${WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

WORK=$(mktemp -d /tmp/qft-run.XXXXXX)
"$HERE/netem.sh" up "$PROFILE"
MODE=$(cat "$STATE/mode")

# Capacity of the uplink in Mbit/s: linkem knows it (a trace's mean too); for tc, from the profile.
capacity_mbit() {
	if [ "$MODE" = linkem ]; then
		# linkem writes its report within a second of starting.
		for _ in $(seq 30); do
			if [ -r "$STATE/linkem.json" ]; then break; fi
			sleep 0.1
		done
	fi
	if [ -r "$STATE/linkem.json" ] && command -v python3 >/dev/null; then
		python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["up"]["capacity_mbit"]; print("-" if c is None else f"{c:.3f}")' "$STATE/linkem.json"
		return
	fi
	awk -v p="$PROFILE" '!/^[[:space:]]*#/ && $1 == p { r = $2; v = r + 0; u = tolower(r); sub(/^[0-9.]+/, "", u);
		m = (u == "gbit") ? 1e3 : (u == "mbit") ? 1 : (u == "kbit") ? 1e-3 : 0; if (m) printf "%.3f", v * m; else print "-" }' "$HERE/profiles.txt"
}
CAP=$(capacity_mbit)

# Restart the emulator's clock and counters so that every run sees the same trace and cut phase.
RESET_NS=0
reset_link() {
	if [ "$MODE" = linkem ] && [ -r "$STATE/linkem.pid" ]; then
		kill -USR1 "$(cat "$STATE/linkem.pid")"
		RESET_NS=$(date +%s%N)
		sleep 0.2
	else
		RESET_NS=$(date +%s%N)
	fi
}

# Uplink capacity in Mbit/s during [A, B) ms of the link's clock: the rate, or the trace's
# opportunities, less the time the link is cut. This is what a run's goodput is a share of.
window_capacity_mbit() {
	local a=$1 b=$2 file=/dev/null rate=0
	case "$P_UP" in
	-)
		echo "-"
		return
		;;
	trace:*) file=$TRACES/${P_UP#trace:} ;;
	*) rate=$(rate_bps "$P_UP") ;;
	esac
	awk -v a="$a" -v b="$b" -v rate="$rate" -v cut="$P_CUT" '
	function ms(x,   v, u) { v = x + 0; u = x; sub(/^[0-9.]+/, "", u); return (u == "s") ? v * 1000 : (u == "us") ? v / 1000 : v }
	function down(t) { return every > 0 && t >= first && (t - first) % every < dn }
	BEGIN { every = 0; if (cut != "-") { n = split(cut, p, /[\/@]/); every = ms(p[1]); dn = ms(p[2]); first = (n > 2) ? ms(p[3]) : every - dn } }
	rate == 0 && NF { ts[++nts] = $1 + 0 }
	END {
		if (b <= a) { print "-"; exit }
		if (rate > 0) { up = 0; for (t = a; t < b; t++) up += !down(t); printf "%.3f\n", rate * up / (b - a) / 1e6; exit }
		P = ts[nts]; cnt = 0
		for (i = 1; i <= nts; i++) for (k = int((a - ts[i]) / P); k * P + ts[i] < b; k++) { t = k * P + ts[i]; if (t >= a && !down(t)) cnt++ }
		printf "%.3f\n", cnt * 1500 * 8 / ((b - a) / 1000) / 1e6
	}' "$file"
}

# Append the link's capacity during a run and the run's share of it to a JSON line with
# "seconds" and "goodput_mbit"; START_NS is when the upload started.
with_share() {
	local line=$1 start_ns=$2 secs good a b capw share
	secs=$(echo "$line" | grep -o '"seconds":[0-9.]*' | cut -d: -f2)
	good=$(echo "$line" | grep -o '"goodput_mbit":[0-9.]*' | cut -d: -f2)
	if [ -z "$secs" ] || [ -z "$good" ]; then
		echo "$line"
		return
	fi
	a=$(((start_ns - RESET_NS) / 1000000))
	b=$(awk -v a="$a" -v s="$secs" 'BEGIN { printf "%d", a + s * 1000 }')
	capw=$(window_capacity_mbit "$a" "$b")
	share=$(awk -v g="$good" -v c="$capw" 'BEGIN { if (c + 0 > 0) printf "%.4f", g / c; else print "null" }')
	[ "$capw" != - ] || capw=null
	echo "${line%\}},\"link_start_ms\":$a,\"link_capacity_mbit\":$capw,\"share\":$share}"
}

# TCP segments the device side retransmitted (the namespace's own counters).
# shellcheck disable=SC2016 # awk's own $13
tcp_retrans() { ip netns exec qft-dev awk '/^Tcp:/ { if (h) { print $13; exit } h = 1 }' /proc/net/snmp; }

# ---- quicft --------------------------------------------------------------------------------------

QFT_SERVER_PID=
quicft_bins() {
	local dir=${QFT_BIN_DIR:-}
	if [ -z "$dir" ]; then
		(cd "$ROOT" && cargo build --release -q -p quicft-server -p quicft-client) >&2 || return 1
		dir=${CARGO_TARGET_DIR:-$ROOT/target}/release
	fi
	[ -x "$dir/quicft" ] && [ -x "$dir/quicft-server" ] || return 1
	"$dir/quicft" upload --help >/dev/null 2>&1 || return 1
	echo "$dir"
}

start_quicft_server() {
	local bin=$1
	mkdir -p "$WORK/server"
	ip netns exec qft-srv "$bin/quicft-server" --data-dir "$WORK/server" --quic "$SRV_IP:14567" \
		--tls "$SRV_IP:8883" --tcp off --http off --allow-anonymous >"$WORK/server.log" 2>&1 </dev/null &
	QFT_SERVER_PID=$!
	for _ in $(seq 100); do
		[ -r "$WORK/server/certs/ca.pem" ] && ip netns exec qft-srv ss -ltn | grep -q "$SRV_IP:8883" && return 0
		kill -0 "$QFT_SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	say "quicft-server did not start: $(tail -5 "$WORK/server.log")"
	return 1
}

stop_quicft_server() {
	[ -n "${QFT_SERVER_PID:-}" ] || return 0
	kill -TERM "$QFT_SERVER_PID" 2>/dev/null || true
	wait "$QFT_SERVER_PID" 2>/dev/null || true
	QFT_SERVER_PID=
}

# One upload with the quicft CLI; prints its JSON line (the CLI's --json output, as issue 4 defines it).
quicft_upload() {
	local bin=$1 transport=$2 file=$3
	ip netns exec qft-dev "$bin/quicft" --transport "$transport" --server "$SRV_IP" \
		--ca "$WORK/server/certs/ca.pem" upload "$file" --json
}

# ---- runs ----------------------------------------------------------------------------------------

FILE=$WORK/upload.bin
BYTES=$(awk -v s="$SIZE" 'BEGIN { n = s + 0; u = toupper(s); sub(/^[0-9.]+/, "", u);
	m = (u ~ /^G/) ? 1073741824 : (u ~ /^M/) ? 1048576 : (u ~ /^K/) ? 1024 : 1; printf "%d", n * m }')
[ "$BYTES" -gt 0 ] || die "bad size '$SIZE'"
head -c "$BYTES" /dev/urandom >"$FILE"
LINES=$WORK/runs.jsonl
: >"$LINES"

for method in $METHODS; do
	case "$method" in
	https)
		"$HERE/nginx-put.sh" start
		"$HERE/nginx-put.sh" prepare "$SIZE"
		for i in $(seq "$RUNS"); do
			reset_link
			r0=$(tcp_retrans)
			t0=$(date +%s%N)
			line=$("$HERE/nginx-put.sh" upload "$SIZE" || true)
			r1=$(tcp_retrans)
			[ -n "$line" ] || line='{"method":"https-put","http_code":0}'
			line=$(with_share "$line" "$t0")
			echo "${line%\}},\"run\":$i,\"tcp_retrans_segs\":$((r1 - r0))}" >>"$LINES"
		done
		"$HERE/nginx-put.sh" stop
		;;
	quic | tls)
		if ! bin=$(quicft_bins); then
			say "quicft over $method: not available yet (needs quicft-server and 'quicft upload --json')"
			echo "{\"method\":\"quicft-$method\",\"available\":false}" >>"$LINES"
			continue
		fi
		[ -n "$QFT_SERVER_PID" ] || start_quicft_server "$bin" || {
			echo "{\"method\":\"quicft-$method\",\"available\":false}" >>"$LINES"
			continue
		}
		for i in $(seq "$RUNS"); do
			reset_link
			t0=$(date +%s%N)
			line=$(quicft_upload "$bin" "$method" "$FILE" | tail -1 || true)
			case "$line" in "{"*) ;; *) line="{\"error\":\"no JSON from quicft upload\"}" ;; esac
			line=$(with_share "$line" "$t0")
			echo "{\"method\":\"quicft-$method\",\"run\":$i,\"result\":$line}" >>"$LINES"
		done
		;;
	*) die "unknown method '$method'" ;;
	esac
done

# ---- report --------------------------------------------------------------------------------------

mkdir -p "$RESULTS"
OUT=$RESULTS/$PROFILE-$SIZE-$(date -u +%Y%m%dT%H%M%SZ).json
{
	printf '{"profile":"%s","size":"%s","bytes":%d,"emulator":"%s","capacity_mbit":%s,' "$PROFILE" "$SIZE" "$BYTES" "$MODE" "$([ "$CAP" = - ] && echo null || echo "$CAP")"
	printf '"machine":{"cores":%d,"kernel":"%s"},"runs":[' "$(nproc)" "$(uname -r)"
	paste -sd, "$LINES"
	printf ']}\n'
} >"$OUT"

# Medians per method, from the JSON lines (awk: no JSON tool needed for these flat fields).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { grep -o "\"$1\":-\?[0-9][0-9.e+-]*" | cut -d: -f2 || true; }

echo
echo "### $PROFILE, $SIZE upload, $RUNS runs (medians), via $MODE, uplink capacity $CAP Mbit/s (mean), $(nproc) cores"
echo
echo "Share of link: goodput over the uplink capacity during each run (a trace's opportunities then, cuts excluded)."
echo
echo "| method | congestion control | completion s | goodput Mbit/s | share of link | telemetry p50 / p99 ms | re-sent |"
echo "|---|---|---|---|---|---|---|"
for method in $METHODS; do
	case "$method" in
	https)
		rows=$(grep '"method":"https-put"' "$LINES" | grep '"http_code":20[01]' || true)
		cc=$(echo "$rows" | grep -o '"cc":"[a-z0-9]*"' | head -1 | cut -d'"' -f4)
		secs=$(echo "$rows" | field seconds | median)
		good=$(echo "$rows" | field goodput_mbit | median)
		retr=$(echo "$rows" | field tcp_retrans_segs | median)
		share=$(echo "$rows" | field share | median | awk '$1 != "-" { printf "%.1f%%", 100 * $1; next } { print "-" }')
		echo "| HTTPS PUT (curl → nginx, TCP) | ${cc:--} (kernel) | $secs | $good | $share | n/a | $retr TCP segments; a failed PUT restarts from 0 |"
		;;
	quic | tls)
		if grep -q "\"method\":\"quicft-$method\",\"available\":false" "$LINES"; then
			echo "| quicft over ${method^^} | - | not available yet | | | | |"
			continue
		fi
		rows=$(grep "\"method\":\"quicft-$method\"" "$LINES")
		secs=$(echo "$rows" | field seconds | median)
		good=$(echo "$rows" | field goodput_mbit | median)
		share=$(echo "$rows" | field share | median | awk '$1 != "-" { printf "%.1f%%", 100 * $1; next } { print "-" }')
		echo "| quicft over ${method^^} | see JSON | $secs | $good | $share | see JSON | see JSON |"
		;;
	esac
done
echo
say "runs: $OUT"
