#!/usr/bin/env bash
# Weak-link test bed for the quicft benchmark: a device and a server in two network namespaces, joined
# through an emulated link shaped from a named profile (bench/profiles.txt). Run as root.
#
#   bench/netem.sh up PROFILE        create qft-dev (198.18.0.1) and qft-srv (198.18.0.2), shape the link
#   bench/netem.sh down              remove everything (idempotent)
#   bench/netem.sh status            what is up, qdiscs, the emulator's live report
#   bench/netem.sh verify [PROFILE]  measure the link (ping, iperf3) against its profile
#   bench/netem.sh run PROFILE [SIZE] the comparison on that link (see bench/README.md)
#   bench/netem.sh exec dev|srv CMD  run CMD inside a namespace
#   bench/netem.sh profiles          list the profiles
#
# Environment: QFT_EMU=auto|netem|linkem (auto: tc netem where the kernel has sch_netem, else linkem;
# profiles with a trace or a cut always use linkem), QFT_SEED (linkem's loss/jitter seed, default 1),
# QFT_LINKEM (a linkem binary to use instead of building one), QFT_TRACES (trace folder),
# QFT_PROFILES (profile file), QFT_STATE (state folder, default /run/qft-bench).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PROFILES=${QFT_PROFILES:-$HERE/profiles.txt}
TRACES=${QFT_TRACES:-$ROOT/../shared/traces}
STATE=${QFT_STATE:-/run/qft-bench}
EMU=${QFT_EMU:-auto}
SEED=${QFT_SEED:-1}

DEV_NS=qft-dev
SRV_NS=qft-srv
DEV_IP=198.18.0.1
SRV_IP=198.18.0.2
# linkem's TUN devices, and the veth pair of the netem mode (created in the root namespace, so the
# names must differ there).
DEV_TUN=qftd0
SRV_TUN=qfts0
DEV_VETH=qftv-dev
SRV_VETH=qftv-srv

say() { echo "netem.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }
have() { command -v "$1" >/dev/null 2>&1; }
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

# ---- profiles ------------------------------------------------------------------------------------

profile_names() { awk '!/^[[:space:]]*(#|$)/ {print $1}' "$PROFILES"; }

# Sets P_NAME P_UP P_DOWN P_RTT P_JITTER P_UP_LOSS P_DOWN_LOSS P_QUEUE P_CUT from the profile's line.
load_profile() {
	local line
	line=$(awk -v p="$1" '!/^[[:space:]]*#/ && $1 == p' "$PROFILES")
	[ -n "$line" ] || die "no profile '$1' in $PROFILES (try: $0 profiles)"
	# shellcheck disable=SC2086
	set -- $line
	[ $# -eq 9 ] || die "profile '$1' has $# columns, expected 9 (see the header of $PROFILES)"
	P_NAME=$1 P_UP=$2 P_DOWN=$3 P_RTT=$4 P_JITTER=$5 P_UP_LOSS=$6 P_DOWN_LOSS=$7 P_QUEUE=$8 P_CUT=$9
	case "$P_UP$P_DOWN" in
	*trace:*)
		for t in "$P_UP" "$P_DOWN"; do
			case "$t" in trace:*) [ -r "$TRACES/${t#trace:}" ] || die "trace $TRACES/${t#trace:} not found (set QFT_TRACES)" ;; esac
		done
		;;
	esac
}

# A tc-style rate (20mbit, 500kbit) in bit/s.
rate_bps() {
	awk -v r="$1" 'BEGIN { v = r + 0; u = tolower(r); sub(/^[0-9.]+/, "", u);
		m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1; printf "%d", v * m }'
}

# One-way delay in ms: half the RTT.
one_way_ms() { awk -v r="$P_RTT" 'BEGIN { printf "%g", r / 2 }'; }

profile_needs_linkem() {
	case "$P_UP$P_DOWN" in *trace:*) return 0 ;; esac
	[ "$P_CUT" != "-" ]
}

# ---- emulator choice -----------------------------------------------------------------------------

# True when the kernel can run a netem qdisc (tried on the loopback of a scratch namespace).
netem_available() {
	local ns=qft-probe rc=0
	ip netns del "$ns" 2>/dev/null || true
	ip netns add "$ns" || return 1
	ip -n "$ns" link set lo up
	if ! tc -n "$ns" qdisc add dev lo root netem delay 1ms 2>"$STATE/netem-probe.err"; then
		rc=1
	fi
	ip netns del "$ns" 2>/dev/null || true
	return $rc
}

choose_emulator() {
	if profile_needs_linkem; then
		echo linkem
		return
	fi
	case "$EMU" in
	linkem) echo linkem ;;
	netem)
		netem_available || die "QFT_EMU=netem but tc netem fails: $(cat "$STATE/netem-probe.err")"
		echo netem
		;;
	auto) if netem_available; then echo netem; else echo linkem; fi ;;
	*) die "QFT_EMU must be auto, netem or linkem" ;;
	esac
}

# ---- linkem --------------------------------------------------------------------------------------

linkem_bin() {
	if [ -n "${QFT_LINKEM:-}" ]; then
		echo "$QFT_LINKEM"
		return
	fi
	say "building linkem (release)"
	(cd "$ROOT" && cargo build --release -q -p linkem) >&2 || die "cargo build -p linkem failed"
	echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/linkem"
}

# linkem's spec for one direction: capacity delay_ms jitter_ms loss queue
linkem_spec() {
	local cap=$1 delay=$2 jitter=$3 loss=$4 queue=$5 s
	s="delay=${delay}ms"
	[ "$jitter" = 0 ] || [ "$jitter" = - ] || s+=",jitter=${jitter}ms"
	case "$loss" in
	- | 0 | 0%) ;;
	ge:*) s+=",ge=${loss#ge:}" ;;
	*) s+=",loss=$loss" ;;
	esac
	case "$cap" in
	-) ;;
	trace:*) s+=",trace=$TRACES/${cap#trace:}" ;;
	*) s+=",rate=$cap" ;;
	esac
	[ "$queue" = - ] || s+=",queue=$queue"
	echo "$s"
}

pid_is_linkem() { [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q linkem; }

up_linkem() {
	local bin d up down
	bin=$(linkem_bin)
	[ -x "$bin" ] || die "no linkem binary at $bin"
	d=$(one_way_ms)
	up=$(linkem_spec "$P_UP" "$d" "$P_JITTER" "$P_UP_LOSS" "$P_QUEUE")
	down=$(linkem_spec "$P_DOWN" "$d" "$P_JITTER" "$P_DOWN_LOSS" "$P_QUEUE")
	rm -f "$STATE/linkem.ready" "$STATE/linkem.json"
	local args=(--dev-tun "$DEV_TUN" --srv-tun "$SRV_TUN" --dev-netns "$DEV_NS" --srv-netns "$SRV_NS"
		--up "$up" --down "$down" --seed "$SEED" --label "$P_NAME"
		--stats-file "$STATE/linkem.json" --ready-file "$STATE/linkem.ready")
	[ "$P_CUT" = - ] || args+=(--cut "$P_CUT")
	# Real-time priority where allowed: the emulator stands for hardware, and a compile or the benchmark's
	# own processes on the same two cores must not add delay to the link.
	local prio=()
	if have chrt && chrt -f 10 true 2>/dev/null; then prio=(chrt -f 10); fi
	setsid "${prio[@]}" "$bin" "${args[@]}" >"$STATE/linkem.log" 2>&1 </dev/null &
	echo $! >"$STATE/linkem.pid"
	for _ in $(seq 100); do
		[ -e "$STATE/linkem.ready" ] && break
		kill -0 "$(cat "$STATE/linkem.pid")" 2>/dev/null || die "linkem exited: $(cat "$STATE/linkem.log")"
		sleep 0.1
	done
	[ -e "$STATE/linkem.ready" ] || die "linkem did not come up: $(cat "$STATE/linkem.log")"
	# linkem writes its own PID there (whatever setsid/chrt did about forking).
	cp "$STATE/linkem.ready" "$STATE/linkem.pid"
	ip -n "$DEV_NS" addr add "$DEV_IP" peer "$SRV_IP" dev "$DEV_TUN"
	ip -n "$SRV_NS" addr add "$SRV_IP" peer "$DEV_IP" dev "$SRV_TUN"
	ip -n "$DEV_NS" link set "$DEV_TUN" up
	ip -n "$SRV_NS" link set "$SRV_TUN" up
	say "linkem pid $(cat "$STATE/linkem.pid"): up [$up] down [$down]${P_CUT:+ cut $P_CUT}"
}

stop_linkem() {
	local pid
	[ -r "$STATE/linkem.pid" ] || return 0
	pid=$(cat "$STATE/linkem.pid")
	if pid_is_linkem "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "linkem $pid did not stop on SIGTERM, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$STATE/linkem.pid" "$STATE/linkem.ready"
}

# ---- tc netem ------------------------------------------------------------------------------------

# Shape the egress of one veth end: netem (delay, jitter, loss) with a tbf child (rate, drop-tail queue).
shape_netem() {
	local ns=$1 dev=$2 cap=$3 delay=$4 jitter=$5 loss=$6 queue=$7
	local netem=() tbf=()
	if [ "$delay" != 0 ] || { [ "$jitter" != 0 ] && [ "$jitter" != - ]; }; then
		netem+=(delay "${delay}ms")
		[ "$jitter" = 0 ] || [ "$jitter" = - ] || netem+=("${jitter}ms")
	fi
	case "$loss" in
	- | 0 | 0%) ;;
	ge:*)
		local IFS=/
		# shellcheck disable=SC2086
		set -- ${loss#ge:}
		netem+=(loss gemodel "$@")
		;;
	*) netem+=(loss random "$loss") ;;
	esac
	if [ "$cap" != - ]; then
		local bps burst
		bps=$(rate_bps "$cap")
		# A few ms of burst, never below two full-size frames.
		burst=$(awk -v b="$bps" 'BEGIN { x = b / 8 * 0.004; printf "%d", (x < 3100) ? 3100 : x }')
		tbf=(rate "$cap" burst "$burst")
		case "$queue" in
		-) tbf+=(latency 200ms) ;;
		*s) tbf+=(latency "$queue") ;;
		*) tbf+=(limit "$queue") ;;
		esac
	fi
	if [ ${#netem[@]} -gt 0 ]; then
		tc -n "$ns" qdisc add dev "$dev" root handle 1: netem "${netem[@]}" limit 100000
		[ ${#tbf[@]} -eq 0 ] || tc -n "$ns" qdisc add dev "$dev" parent 1:1 handle 10: tbf "${tbf[@]}"
	elif [ ${#tbf[@]} -gt 0 ]; then
		tc -n "$ns" qdisc add dev "$dev" root handle 10: tbf "${tbf[@]}"
	fi
}

up_netem() {
	local d
	d=$(one_way_ms)
	ip link add "$DEV_VETH" type veth peer name "$SRV_VETH"
	ip link set "$DEV_VETH" netns "$DEV_NS"
	ip link set "$SRV_VETH" netns "$SRV_NS"
	ip -n "$DEV_NS" addr add "$DEV_IP/30" dev "$DEV_VETH"
	ip -n "$SRV_NS" addr add "$SRV_IP/30" dev "$SRV_VETH"
	ip -n "$DEV_NS" link set "$DEV_VETH" up
	ip -n "$SRV_NS" link set "$SRV_VETH" up
	# Segmentation offloads would hand the shaper 64 KB super-packets; a real link sees frames.
	if have ethtool; then
		ip netns exec "$DEV_NS" ethtool -K "$DEV_VETH" tso off gso off gro off >/dev/null 2>&1 || true
		ip netns exec "$SRV_NS" ethtool -K "$SRV_VETH" tso off gso off gro off >/dev/null 2>&1 || true
	fi
	shape_netem "$DEV_NS" "$DEV_VETH" "$P_UP" "$d" "$P_JITTER" "$P_UP_LOSS" "$P_QUEUE"
	shape_netem "$SRV_NS" "$SRV_VETH" "$P_DOWN" "$d" "$P_JITTER" "$P_DOWN_LOSS" "$P_QUEUE"
	say "tc netem on veth $DEV_VETH/$SRV_VETH"
}

# ---- commands ------------------------------------------------------------------------------------

cmd_down() {
	need_root
	mkdir -p "$STATE"
	[ ! -x "$HERE/nginx-put.sh" ] || QFT_STATE=$STATE "$HERE/nginx-put.sh" stop >/dev/null 2>&1 || true
	stop_linkem
	ns_exists "$DEV_NS" && ip netns del "$DEV_NS"
	ns_exists "$SRV_NS" && ip netns del "$SRV_NS"
	ip link del "$DEV_VETH" 2>/dev/null || true
	rm -f "$STATE/profile" "$STATE/mode"
	return 0
}

cmd_up() {
	[ $# -ge 1 ] || die "usage: $0 up PROFILE"
	need_root
	load_profile "$1"
	mkdir -p "$STATE"
	cmd_down
	local mode
	mode=$(choose_emulator)
	ip netns add "$DEV_NS"
	ip netns add "$SRV_NS"
	for ns in "$DEV_NS" "$SRV_NS"; do
		ip -n "$ns" link set lo up
		# IPv6 would only add router solicitations to the link's traffic and reports.
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	done
	if [ "$mode" = linkem ]; then up_linkem; else up_netem; fi
	echo "$P_NAME" >"$STATE/profile"
	echo "$mode" >"$STATE/mode"
	# First packet through (a satellite RTT is 600 ms; a lossy link may eat a ping).
	if have ping; then
		local _ ok=
		for _ in 1 2 3 4 5; do
			if ip netns exec "$DEV_NS" ping -q -c 1 -W 3 "$SRV_IP" >/dev/null 2>&1; then ok=1 && break; fi
		done
		[ -n "$ok" ] || say "warning: $SRV_IP does not answer ping from $DEV_NS"
	fi
	say "up: profile $P_NAME via $mode; device $DEV_NS $DEV_IP, server $SRV_NS $SRV_IP"
}

cmd_status() {
	local profile mode
	profile=$(cat "$STATE/profile" 2>/dev/null || echo -)
	mode=$(cat "$STATE/mode" 2>/dev/null || echo -)
	echo "profile: $profile  emulator: $mode  state: $STATE"
	for ns in "$DEV_NS" "$SRV_NS"; do
		if ns_exists "$ns"; then
			echo "== $ns"
			ip -n "$ns" -brief addr show | grep -v '^lo ' || true
			tc -n "$ns" qdisc show | grep -v ' dev lo ' || true
		else
			echo "== $ns: absent"
		fi
	done
	if [ -r "$STATE/linkem.pid" ]; then
		local pid
		pid=$(cat "$STATE/linkem.pid")
		if pid_is_linkem "$pid"; then echo "linkem: pid $pid running"; else echo "linkem: pid $pid NOT running"; fi
	fi
	if [ -r "$STATE/linkem.json" ]; then
		echo "linkem report ($STATE/linkem.json; the last one written if linkem is gone):"
		summarize_linkem "$STATE/linkem.json"
	fi
}

summarize_linkem() {
	if have python3; then
		python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['label']} seed {r['seed']} cut {r['cut']} elapsed {r['elapsed_s']:.1f} s")
for d in ("up", "down"):
    x = r[d]
    q, l, dr = x["queue_delay_ms"], x["delay_ms"], x["drops"]
    f = lambda v: "-" if v is None else f"{v:.1f}"
    print(f"  {d:>4}: {x['packets_in']} in, {x['packets_out']} out, {x['bytes_out']} B; "
          f"loss {x['loss_rate']*100:.2f}% (random {dr['loss_random']}, burst {dr['loss_burst']}), "
          f"queue-full {dr['queue_full']}, down {dr['link_down']}, write-err {dr['write_error']}; "
          f"queue delay p50 {f(q['p50'])} p99 {f(q['p99'])} ms; delay p50 {f(l['p50'])} p99 {f(l['p99'])} ms; "
          f"achieved {f(x['achieved_mbit'])} (peak 1 s {f(x['peak_1s_mbit'])}) of {f(x['capacity_mbit'])} Mbit/s")
EOF
	else
		cat "$1"
	fi
}

cmd_exec() {
	[ $# -ge 2 ] || die "usage: $0 exec dev|srv CMD..."
	local ns
	case "$1" in dev) ns=$DEV_NS ;; srv) ns=$SRV_NS ;; *) die "exec: dev or srv" ;; esac
	shift
	exec ip netns exec "$ns" "$@"
}

cmd_profiles() {
	awk '!/^[[:space:]]*(#|$)/ { printf "%-22s up %-32s down %-32s rtt %4s ms jitter %3s up-loss %-12s down-loss %-6s queue %-6s cut %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$PROFILES"
}

# Measure the link that is up: RTT (ping), uplink and downlink TCP goodput (iperf3), uplink UDP loss.
cmd_verify() {
	need_root
	if [ $# -ge 1 ]; then cmd_up "$1"; fi
	local profile secs=${QFT_VERIFY_SECS:-10}
	profile=$(cat "$STATE/profile" 2>/dev/null) || die "no link is up"
	load_profile "$profile"
	have ping || die "verify needs ping (Debian: iputils-ping)"
	have iperf3 || die "verify needs iperf3 (Debian: iperf3)"
	have python3 || die "verify needs python3"
	echo "== $profile ($(cat "$STATE/mode")): rtt $P_RTT ms, up $P_UP (loss $P_UP_LOSS), down $P_DOWN (loss $P_DOWN_LOSS), jitter $P_JITTER, queue $P_QUEUE, cut $P_CUT"
	if [ -r "$STATE/linkem.pid" ]; then
		# Fresh statistics (and trace/cut clock) for this measurement; linkem acts on it within ~10 ms.
		kill -USR1 "$(cat "$STATE/linkem.pid")"
		sleep 0.2
	fi
	ip netns exec "$DEV_NS" ping -q -c 50 -i 0.05 "$SRV_IP" | tail -2
	ip netns exec "$SRV_NS" iperf3 -s -B "$SRV_IP" -D --pidfile "$STATE/iperf3.pid" >/dev/null
	sleep 0.3
	local up down udp
	up=$(ip netns exec "$DEV_NS" iperf3 -c "$SRV_IP" -t "$secs" -J 2>/dev/null) || true
	down=$(ip netns exec "$DEV_NS" iperf3 -c "$SRV_IP" -t "$secs" -R -J 2>/dev/null) || true
	# UDP well under capacity: the loss it sees is the profile's random loss, not queue overflow.
	local udp_rate=5M
	case "$P_UP" in
	- | trace:*) ;;
	*) udp_rate=$(awk -v r="$(rate_bps "$P_UP")" 'BEGIN { x = r / 2; if (x > 5e6) x = 5e6; printf "%dK", x / 1000 }') ;;
	esac
	udp=$(ip netns exec "$DEV_NS" iperf3 -c "$SRV_IP" -u -b "$udp_rate" -l 1200 -t "$secs" -J 2>/dev/null) || true
	kill "$(cat "$STATE/iperf3.pid")" 2>/dev/null || true
	UP="$up" DOWN="$down" UDP="$udp" python3 - <<'EOF'
import json, os
def get(name):
    try:
        return json.loads(os.environ[name])
    except Exception:
        return None
for name, label in (("UP", "tcp up  "), ("DOWN", "tcp down")):
    r = get(name)
    if not r or "end" not in r:
        print(f"{label}: failed"); continue
    e = r["end"]
    cc = e.get("sender_tcp_congestion", "?")
    rx = e["sum_received"]["bits_per_second"] / 1e6
    retr = e["sum_sent"].get("retransmits", "?")
    print(f"{label}: {rx:.2f} Mbit/s received (sender cc {cc}, retransmits {retr})")
r = get("UDP")
if r and "end" in r:
    s = r["end"]["sum"]
    print(f"udp up  : {s['lost_packets']}/{s['packets']} lost = {s['lost_percent']:.2f}%, jitter {s['jitter_ms']:.2f} ms")
else:
    print("udp up  : failed")
EOF
	if [ -r "$STATE/linkem.json" ]; then
		sleep 1.2
		echo "linkem's own report since the start of verify:"
		summarize_linkem "$STATE/linkem.json"
	fi
}

cmd_run() {
	[ $# -ge 1 ] || die "usage: $0 run PROFILE [SIZE]"
	need_root
	exec "$HERE/run.sh" "$@"
}

main() {
	local cmd=${1:-help}
	shift || true
	case "$cmd" in
	up) cmd_up "$@" ;;
	down) cmd_down ;;
	status) cmd_status ;;
	verify) cmd_verify "$@" ;;
	run) cmd_run "$@" ;;
	exec) cmd_exec "$@" ;;
	profiles) cmd_profiles ;;
	help | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
	*) die "unknown command '$cmd' (try: $0 help)" ;;
	esac
}

# Sourcing the script (for tests) defines the functions without running a command.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
