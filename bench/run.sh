#!/usr/bin/env bash
# The comparison on one emulated link: quicft over QUIC, quicft over TLS/TCP, and HTTPS PUT with curl to
# nginx, each QFT_RUNS times (default 3) with the same file size, the methods interleaved (run 1 of each,
# then run 2 of each, ...). Called by `bench/netem.sh run PROFILE [SIZE]`; run as root.
#
# Prints a markdown table of the medians and writes every run as JSON to
# bench/results/PROFILE-SIZE-TIME.json (bench/NETEM.md explains each figure).
#
# Every run: the device program connects and measures idle telemetry latency, then the link's clock is
# restarted (linkem: queue emptied, counters, trace and cut schedule from zero), then the upload starts
# while the device publishes a 100-byte QoS 1 telemetry message every 100 ms.
#   quic, quic:CC  netem_device upload over QUIC (device controller QFT_DEVICE_CC, or CC), telemetry on
#                  the same connection (mirrored: the SDK default)
#   quic-nomirror  the same without the telemetry mirror (QuicOptions::telemetry_mirror = None)
#   quic@N         the same with the device's path-MTU search bound at N bytes of UDP payload
#                  (QuicOptions::mtu_upper_bound; quic@1452 is quinn's default, the SDK's is 1472)
#   tls            the same over TLS/TCP (the kernel's TCP congestion control)
#   https          curl --upload-file to nginx; telemetry from netem_device on its own QUIC connection
#                  beside it (what a device with an MQTT link and an HTTPS uploader does)
#   cli            `quicft upload --json` over QUIC, no telemetry (checks the CLI on the link)
#   idle           no upload: the telemetry alone for QFT_IDLE_S seconds (default 20), the floor that
#                  the link itself sets under every method's telemetry figures
#
# Environment: QFT_RUNS (3), QFT_METHODS ("quic tls https"), QFT_DEVICE_CC (device QUIC controller,
# default delay), QFT_SERVER_CC (quicft-server --congestion, default delay), QFT_KEEP=1 leaves the link
# up afterwards, QFT_BIN_DIR (where quicft-server, netem_device, netem_report and quicft are; default:
# a release build), QFT_RESULTS (results folder), QFT_PLOT=1 also redraws bench/results/netem.svg.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The profile parser, rate_bps, TRACES, STATE... (sourcing runs no command).
# shellcheck source=netem.sh
source "$HERE/netem.sh"
RUNS=${QFT_RUNS:-3}
METHODS=${QFT_METHODS:-quic tls https}
DEVICE_CC=${QFT_DEVICE_CC:-delay}
SERVER_CC=${QFT_SERVER_CC:-delay}
RESULTS=${QFT_RESULTS:-$HERE/results}
SRV_IP=198.18.0.2

say() { echo "run.sh: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 PROFILE [SIZE]"
PROFILE=$1
SIZE=${2:-20M}
[ "$(id -u)" -eq 0 ] || die "must run as root"
load_profile "$PROFILE"

cleanup() {
	stop_device
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

# linkem's uplink counters since the last reset, as a JSON object (null without linkem). Its report is
# rewritten every second, so wait for one written after the run ended.
link_counters() {
	if [ "$MODE" != linkem ] || [ ! -r "$STATE/linkem.json" ]; then
		echo null
		return
	fi
	sleep 1.1
	python3 - "$STATE/linkem.json" <<'PY'
import json, sys
u = json.load(open(sys.argv[1]))["up"]
d = u["drops"]
print(json.dumps({"up_bytes_in": u["bytes_in"], "up_packets_in": u["packets_in"], "up_drops": d["total"],
                  "up_drops_loss": d["loss_random"] + d["loss_burst"], "up_drops_queue": d["queue_full"],
                  "up_drops_cut": d["link_down"], "queue_delay_p50_ms": u["queue_delay_ms"]["p50"],
                  "queue_delay_p99_ms": u["queue_delay_ms"]["p99"]}))
PY
}

# TCP segments the device side retransmitted (the namespace's own counters).
# shellcheck disable=SC2016 # awk's own $13
tcp_retrans() { ip netns exec qft-dev awk '/^Tcp:/ { if (h) { print $13; exit } h = 1 }' /proc/net/snmp; }

# ---- programs ------------------------------------------------------------------------------------

BIN=${QFT_BIN_DIR:-}
if [ -z "$BIN" ]; then
	say "building quicft-server, quicft, netem_device, netem_report (release)"
	(cd "$ROOT" && cargo build --release -q -p quicft-server -p quicft-client -p quicft-bench) >&2 ||
		die "cargo build failed"
	BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
for b in quicft-server netem_device netem_report; do
	[ -x "$BIN/$b" ] || die "no $BIN/$b"
done

QFT_SERVER_PID=
start_quicft_server() {
	mkdir -p "$WORK/server"
	ip netns exec qft-srv "$BIN/quicft-server" --data-dir "$WORK/server" --quic "$SRV_IP:14567" \
		--tls "$SRV_IP:8883" --tcp off --http off --allow-anonymous --congestion "$SERVER_CC" \
		>"$WORK/server.log" 2>&1 </dev/null &
	QFT_SERVER_PID=$!
	for _ in $(seq 100); do
		if [ -r "$WORK/server/certs/ca.pem" ] && ip netns exec qft-srv ss -ltn | grep -q "$SRV_IP:8883" &&
			ip netns exec qft-srv ss -lun | grep -q "$SRV_IP:14567"; then
			return 0
		fi
		kill -0 "$QFT_SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	die "quicft-server did not start: $(tail -5 "$WORK/server.log")"
}

stop_quicft_server() {
	[ -n "${QFT_SERVER_PID:-}" ] || return 0
	kill -TERM "$QFT_SERVER_PID" 2>/dev/null || true
	wait "$QFT_SERVER_PID" 2>/dev/null || true
	QFT_SERVER_PID=
}

# The device program in the background (`ip netns exec` execs it: $! is its PID).
DEV_PID=
start_device() {
	local out=$1
	shift
	rm -f "$WORK/ready"
	ip netns exec qft-dev "$BIN/netem_device" --server "$SRV_IP" --ca "$WORK/server/certs/ca.pem" "$@" \
		--ready-file "$WORK/ready" >"$out" 2>"$out.err" </dev/null &
	DEV_PID=$!
	for _ in $(seq 600); do
		[ -e "$WORK/ready" ] && return 0
		kill -0 "$DEV_PID" 2>/dev/null || break
		sleep 0.05
	done
	say "netem_device did not get ready: $(tail -3 "$out.err")"
	stop_device
	return 1
}

stop_device() {
	[ -n "${DEV_PID:-}" ] || return 0
	kill -TERM "$DEV_PID" 2>/dev/null || true
	wait "$DEV_PID" 2>/dev/null || true
	DEV_PID=
}

# Wait for the device program; true when it exited 0.
wait_device() {
	local rc=0
	wait "$DEV_PID" || rc=$?
	DEV_PID=
	return $rc
}

# ---- one run of one method -----------------------------------------------------------------------

# Writes one JSON line (the run) to stdout: method, run, ok, the tool's own figures, the link's.
# Arguments: METHOD RUN; the upload window's start (ns) comes from the tool's start_unix_ns when it
# has one, else from the time just before the upload command.
run_one() {
	local method=$1 i=$2 out=$WORK/out.json ok=false t0 r0 r1 extra='{}' cc
	: >"$out"
	case "$method" in
	quic | quic:* | quic@* | quic-nomirror | tls)
		local transport=quic port=14567 mirror=5 mtu=()
		cc=${method#quic:}
		[ "$cc" != "$method" ] || cc=$DEVICE_CC
		if [ "$method" = tls ]; then transport=tls port=8883; fi
		if [ "$method" = quic-nomirror ]; then mirror=0; fi
		case "$method" in quic@*) mtu=(--mtu-upper-bound "${method#quic@}") ;; esac
		if start_device "$out" --transport "$transport" --port "$port" --congestion "$cc" \
			--mirror-ms "$mirror" "${mtu[@]}" --client-id "netem-${method//@/-}-$i" upload "$FILE"; then
			reset_link
			r0=$(tcp_retrans)
			t0=$(date +%s%N)
			kill -USR1 "$DEV_PID"
			if wait_device; then ok=true; else say "$method run $i failed: $(tail -3 "$out.err")"; fi
			r1=$(tcp_retrans)
			extra="{\"tcp_retrans_segs\":$((r1 - r0))}"
		fi
		;;
	https)
		local tele=$WORK/tele.json
		if start_device "$tele" --transport quic --port 14567 --congestion "$DEVICE_CC" \
			--client-id "netem-https-$i" telemetry; then
			reset_link
			r0=$(tcp_retrans)
			t0=$(date +%s%N)
			kill -USR1 "$DEV_PID"
			if "$HERE/nginx-put.sh" upload "$SIZE" >"$out"; then ok=true; fi
			r1=$(tcp_retrans)
			kill -TERM "$DEV_PID" 2>/dev/null || true
			wait_device || say "telemetry beside https run $i failed: $(tail -3 "$tele.err")"
			extra=$(python3 -c '
import json, sys
r, s = json.loads(sys.argv[1]), sys.argv[2]
try:
    t = json.load(open(s))
    r["telemetry"] = t["telemetry"]; r["telemetry_device_cc"] = t["device_cc"]
except Exception:
    pass
print(json.dumps(r))' "{\"tcp_retrans_segs\":$((r1 - r0)),\"tcp_retrans_bytes\":$(((r1 - r0) * 1448))}" "$tele")
		fi
		;;
	idle)
		# No upload: telemetry alone on the link for QFT_IDLE_S seconds (default 20), from the
		# same point of the link's clock as an upload. What the link itself does to telemetry (a
		# trace's capacity dips, its downlink's ACK gaps) is the floor of every method's figures.
		if start_device "$out" --transport quic --port 14567 --congestion "$DEVICE_CC" \
			--client-id "netem-idle-$i" telemetry; then
			reset_link
			t0=$(date +%s%N)
			kill -USR1 "$DEV_PID"
			sleep "${QFT_IDLE_S:-20}"
			kill -TERM "$DEV_PID" 2>/dev/null || true
			if wait_device; then ok=true; else say "idle run $i failed: $(tail -3 "$out.err")"; fi
		fi
		;;
	cli)
		[ -x "$BIN/quicft" ] || die "no $BIN/quicft"
		reset_link
		t0=$(date +%s%N)
		if ip netns exec qft-dev "$BIN/quicft" upload "$FILE" --json --file-id "cli-$i-$$" \
			--server "$SRV_IP:14567" --transport quic --ca "$WORK/server/certs/ca.pem" \
			--server-name localhost --client-id "netem-cli-$i" --congestion "$DEVICE_CC" \
			>"$WORK/cli.out" 2>"$out.err"; then
			ok=true
		fi
		# The CLI's goodput is in bit/s; the table wants goodput_mbit.
		python3 -c '
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    r = {}
if "goodput_bps" in r: r["goodput_mbit"] = r["goodput_bps"] / 1e6
r["device_cc"] = sys.argv[2]
print(json.dumps(r))' "$WORK/cli.out" "$DEVICE_CC" >"$out"
		;;
	*) die "unknown method '$method' (quic, quic:CC, quic@MTU, quic-nomirror, tls, https, cli, idle)" ;;
	esac
	local link
	link=$(link_counters)
	python3 - "$out" "$method" "$i" "$ok" "${t0:-0}" "$RESET_NS" "$extra" "$link" <<'PY' |
import json, sys
path, method, run, ok, t0, reset, extra, link = sys.argv[1:]
try:
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    r = json.loads(lines[-1]) if lines else {}
except Exception:
    r = {}
r.update(json.loads(extra))
if method == "https" and r.get("http_code") not in (200, 201, 204):
    ok = "false"
if "telemetry" in r:
    r["telemetry"]["label"] = {"https": "own QUIC connection beside curl",
                               "idle": "telemetry alone, no upload"}.get(method, "same connection")
start = r.get("start_unix_ns") or int(t0)
r.update({"method": method, "run": int(run), "ok": ok == "true", "link": json.loads(link),
          "link_start_ms": max(0, (int(start) - int(reset)) // 1_000_000) if int(reset) else None})
print(json.dumps(r))
PY
		add_share
}

# Adds the link's capacity during the upload window, and the share of it the goodput was.
add_share() {
	local line a secs capw
	read -r line
	a=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r.get("link_start_ms") or 0, r.get("seconds") or 0)' "$line")
	# shellcheck disable=SC2086
	set -- $a
	secs=$2
	capw=$(window_capacity_mbit "$1" "$(awk -v a="$1" -v s="$secs" 'BEGIN { printf "%d", a + s * 1000 }')")
	python3 -c '
import json, sys
r = json.loads(sys.argv[1]); c = sys.argv[2]
r["link_capacity_mbit"] = None if c in ("-", "") else float(c)
g = r.get("goodput_mbit")
r["share"] = g / r["link_capacity_mbit"] if g and r["link_capacity_mbit"] and r["ok"] else None
print(json.dumps(r))' "$line" "$capw"
}

# ---- runs ----------------------------------------------------------------------------------------

FILE=$WORK/upload.bin
BYTES=$(awk -v s="$SIZE" 'BEGIN { n = s + 0; u = toupper(s); sub(/^[0-9.]+/, "", u);
	m = (u ~ /^G/) ? 1073741824 : (u ~ /^M/) ? 1048576 : (u ~ /^K/) ? 1024 : 1; printf "%d", n * m }')
[ "$BYTES" -gt 0 ] || die "bad size '$SIZE'"
head -c "$BYTES" /dev/urandom >"$FILE"
LINES=$WORK/runs.jsonl
: >"$LINES"

start_quicft_server
case " $METHODS " in
*" https "*)
	"$HERE/nginx-put.sh" start
	"$HERE/nginx-put.sh" prepare "$SIZE"
	;;
esac
KERNEL_CC=$(ip netns exec qft-dev sysctl -n net.ipv4.tcp_congestion_control)

for i in $(seq "$RUNS"); do
	for method in $METHODS; do
		say "$PROFILE $SIZE: $method run $i of $RUNS"
		run_one "$method" "$i" >>"$LINES"
	done
done

# ---- report --------------------------------------------------------------------------------------

mkdir -p "$RESULTS"
OUT=$RESULTS/$PROFILE-$SIZE-$(date -u +%Y%m%dT%H%M%SZ).json
python3 - "$LINES" "$OUT" <<PY
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cap = "$CAP"
doc = {"profile": "$PROFILE", "size": "$SIZE", "bytes": $BYTES, "emulator": "$MODE",
       "capacity_mbit": None if cap in ("-", "") else float(cap), "rtt_ms": float("$P_RTT"),
       "profile_line": "$P_UP $P_DOWN rtt=$P_RTT jitter=$P_JITTER loss=$P_UP_LOSS/$P_DOWN_LOSS queue=$P_QUEUE cut=$P_CUT",
       "runs_per_method": $RUNS, "methods": "$METHODS".split(), "device_cc": "$DEVICE_CC",
       "server_cc": "$SERVER_CC", "kernel_cc": "$KERNEL_CC",
       "machine": {"cores": $(nproc), "kernel": "$(uname -r)"}, "runs": runs}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
PY
echo
"$BIN/netem_report" table "$OUT"
echo
if [ "${QFT_PLOT:-0}" = 1 ]; then
	"$BIN/netem_report" plot "$RESULTS"/*.json -o "$RESULTS/netem.svg" >&2 || say "plot failed"
fi
say "runs: $OUT"
