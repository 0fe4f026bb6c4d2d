# shellcheck shell=bash
# Scenario 1c of loadtest/bench/run.sh: what the env firewall (issue 12)
# costs the warm path and a cold start. Sourced by run.sh, which sets the
# variables these use (TMP, BIN, BT, the ports).
#
# Only the gateway can reach an env with the firewall on, so this
# compares envgate with itself. Each mode of BENCH_FW_MODES (default
# "off off on") gets a gateway of its own in a network namespace of its
# own (lo only: gateway, envs' veths and the client all in there, which
# is the host namespace as far as they can tell): the kernel turns
# connection tracking on per network namespace, for every packet of it,
# as soon as a table there uses it, so the gateways cannot share one, and
# no other software's tables (a host firewall, Docker) make "off" pay for
# tracking. Modes:
#   off      network.firewall: off
#   on       the default: firewall on, the listeners' traffic untracked
#            (the proxy's connections to envs are made inside the envs'
#            namespaces: they meet none of the host's hooks)
#   tracked  on, with network.track_listeners: true
#   nonat    on, the template with egress: none and no DNS forwarder
#   nodns    on, without the DNS forwarder (so no resolv.conf of its own
#            in each env)
# and any of these as MODE@BINARY: that mode run by another build of
# envgate (e.g. "on@/tmp/old/bin/envgate on": a change to the firewall
# against the version before it, side by side).
# The first mode is the base; every other is measured against it. The
# default lists off twice: the second off against the first is the A/A
# check, which must show no difference, and whose interval is the noise
# the method cannot see through.
#
# All gateways run at once, equally warm. On the warm path they are
# paired by default (BENCH_FW_PAIRING=concurrent) by running every mode's
# wrk at the same time in each round: the machine's speed and a
# neighbour's load at each instant then hit all modes alike, and the
# figure compared is CPU time per request (what the firewall costs; the
# modes share the CPUs, so req/s is split by the scheduler). With
# BENCH_FW_PAIRING=alternate, and for cold starts, the modes take turns
# instead: a quad of slots runs every mode twice in palindromic order
# (a b c c b a), each quad starting at the next mode (b c a a c b, ...),
# so that a linear drift of the machine's speed and the advantage of
# running twice in a row fall on every mode alike. Each round or quad
# gives one pair per mode against the base; the report gives the median
# over them of the pairs' effect, its quartiles and a 95 % bootstrap
# interval of that median (benchtool paired).
#
# Knobs: BENCH_FW_QUADS (30) rounds (or quads) of BENCH_FW_SLOT (2) s wrk
# runs on the warm path, 0 for cold only; BENCH_FW_COLD_QUADS (450) quads
# (or rounds) of BENCH_FW_COLD_PER_SLOT (3) cold starts per slot, whose
# p50 is the slot's figure, 0 for warm only; BENCH_FW_COLD_BATCH (10)
# quads between two stops of the envs they started (0: envs then run
# until the gateways stop); BENCH_FW_COLD_PAIRING (concurrent or
# alternate, as on the warm path); BENCH_FW_NICE (-10).

FW_MODES=${BENCH_FW_MODES:-off off on}
# The gateways, the envs and wrk run at this nice value, so that other
# users' processes on a shared machine take less of the CPUs from a run.
FW_NICE=${BENCH_FW_NICE:--10}
FW_NETNS=()
# How the modes take turns on the warm path (BENCH_FW_PAIRING): alternate
# (palindromic quads of slots, one mode at a time) or concurrent (every
# mode's wrk at once in each round).
FW_PAIRING=${BENCH_FW_PAIRING:-concurrent}
# How the modes take turns on cold starts (BENCH_FW_COLD_PAIRING):
# alternate (palindromic quads of slots, one mode at a time) or
# concurrent (every mode's slot at once, two slots per round).
FW_COLD_PAIRING=${BENCH_FW_COLD_PAIRING:-alternate}

# fw_side I: the letter of mode I (a, b, ...): its instance is egfw<letter>,
# its network namespace egfw<letter><our pid>.
fw_side() { printf "\\x$(printf %x $((97 + $1)))"; }
fw_ns() { echo "egfw$1$$"; }

# fw_config MODE SIDE FILE NAME: the warm config of §1 in firewall mode
# MODE, for the gateway NAME of SIDE.
fw_config() {
	local mode=$1 side=$2 file=$3 name=$4 net tmpl=
	case $mode in
	off) net="firewall: off" ;;
	on | nodns) net="firewall: on" ;;
	tracked) net="firewall: on, track_listeners: true" ;;
	nonat)
		net="firewall: on"
		tmpl="    network: {egress: none}"
		;;
	*) die "unknown firewall mode $mode" ;;
	esac
	INSTANCE=egfw$side STATE_DIR=$TMP/state-$name NET_EXTRA="$net${NET_EXTRA:+, $NET_EXTRA}" \
		write_config "$file" "${FW_IDLE:-15m}" "" 'GOMAXPROCS: "1"' "$tmpl"
}

# in_ns SIDE CMD...: runs CMD in SIDE's network namespace.
in_ns() {
	local side=$1
	shift
	nsenter --net="/run/netns/$(fw_ns "$side")" "$@"
}

# fw_start MODE SIDE NAME [pin]: starts SIDE's gateway of MODE in its
# namespace (with pin: on CPU 1, GOMAXPROCS=1, as in §1); sets
# FW_PID[SIDE] and FW_LOG[SIDE].
fw_start() {
	local mode=$1 side=$2 name=$3 pin=${4:-} cfg=$TMP/fw-$2.yaml bin=$BIN
	# MODE@BINARY: another build of envgate in that mode (BINARY with
	# its envgate-init and envgate-demo beside it), to compare two
	# versions of the firewall side by side.
	if [[ $mode == *@* ]]; then
		bin=${mode#*@} mode=${mode%%@*}
	fi
	local pre=(nice -n "$FW_NICE")
	[[ -z $pin ]] || pre+=(taskset -c 1 env GOMAXPROCS=1)
	# nonat, nodns: no resolvers for the forwarder, so it does not start.
	[[ $mode != nonat && $mode != nodns ]] || pre+=(env ENVGATE_HOST_RESOLV_CONF=/dev/null)
	fw_config "$mode" "$side" "$cfg" "$name"
	FW_LOG[$side]=$TMP/gateway-$name.log
	cmd "nsenter --net=/run/netns/$(fw_ns "$side") ${pre[*]} ${bin#"$ROOT"/} --config fw-$side.yaml --log-format json serve 2>gateway-$name.log &  # firewall $mode"
	# nsenter, nice, taskset and env each exec the next: $! is the
	# gateway's pid (a function run with & would be a subshell's).
	nsenter --net="/run/netns/$(fw_ns "$side")" "${pre[@]}" "$bin" --config "$cfg" --log-format json serve 2>"${FW_LOG[$side]}" &
	FW_PID[$side]=$!
	PIDS+=("${FW_PID[$side]}")
	local rc
	for _ in $(seq 100); do
		rc=0
		in_ns "$side" curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/" -H "Host: nothing.invalid" 2>/dev/null || rc=$?
		# Any answer (an error status for a host of no domain) means it
		# listens.
		[[ $rc != 0 && $rc != 22 ]] || return 0
		kill -0 "${FW_PID[$side]}" 2>/dev/null || die "gateway $name exited: $(tail -3 "${FW_LOG[$side]}")"
		sleep 0.1
	done
	die "gateway $name does not listen"
}

# fw_stop SIDE: stops SIDE's gateway and counts what it left.
fw_stop() {
	local side=$1 pid=${FW_PID[$1]} left
	kill -TERM "$pid"
	wait "$pid" || log "gateway $side exited with $?"
	forget "$pid"
	left=$(ip netns list | grep -c "^egfw$side-" || true)
	left=$((left + $(in_ns "$side" ip -o link show | grep -c " egfw$side-" || true)))
	if ((left)); then
		log "LEAK: $left namespaces/links of egfw$side left after the gateway stopped"
		LEAKS=$((LEAKS + left))
	fi
}

# fw_cleanup: on exit, what a run that failed left (run.sh's cleanup has
# already stopped the gateways).
fw_cleanup() {
	local ns side
	for ns in "${FW_NETNS[@]}"; do
		side=${ns:4:1}
		if ip netns list | grep -q "^egfw$side-"; then
			in_ns "$side" "$BIN" --config "$TMP/fw-$side.yaml" gc >/dev/null 2>&1 || true
		fi
		ip netns del "$ns" 2>/dev/null || true
	done
}
CLEANUP_HOOKS+=(fw_cleanup)

# cpu_ns PID...: CPU time in ns of every thread of the processes, summed
# (sum_exec_runtime). This kernel has no IRQ time accounting, so the
# softirq work a task's sends trigger (loopback and veth receive,
# conntrack and nftables included) is in its time, or in ksoftirqd's.
cpu_ns() {
	local p
	for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# fw_slot SIDE: BENCH_FW_SLOT s of wrk on CPU 0 against SIDE's gateway;
# prints "rps cpu_us_per_request": the CPU of wrk, the gateway, the env's
# processes and ksoftirqd per request.
fw_slot() {
	local side=$1 out=$TMP/wrk-slot.txt dur=${BENCH_FW_SLOT:-2} t0 t1 w n rps
	# shellcheck disable=SC2086 # the lists split into pids on purpose
	t0=$(cpu_ns ${FW_TASKS[$side]} $FW_KS)
	w=$({
		TIMEFORMAT='%3U %3S'
		time in_ns "$side" nice -n "$FW_NICE" taskset -c 0 wrk -t1 -c50 -d"${dur}"s -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" >"$out"
	} 2>&1)
	# shellcheck disable=SC2086
	t1=$(cpu_ns ${FW_TASKS[$side]} $FW_KS)
	grep -q 'Non-2xx\|Socket errors' "$out" && die "firewall slot of $side: failed requests: $(grep 'Non-2xx\|Socket errors' "$out")"
	n=$(awk '/ requests in / { print $1 }' "$out")
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
	awk -v ns="$((t1 - t0))" -v w="$w" -v n="$n" -v rps="$rps" '
		BEGIN { split(w, x, " "); printf "%s %.3f\n", rps, (ns / 1e9 + x[1] + x[2]) * 1e6 / n }'
}

# fw_round: one round of concurrent pairing: every side's wrk at once,
# for BENCH_FW_SLOT s (so the machine's speed at each instant, a
# neighbour's load included, is the same for all); prints per side, in
# order, "rps cpu_us_per_request gateway_cpu_us_per_request" (the last
# the gateway's alone: §1's CPU 1).
fw_round() {
	local dur=${BENCH_FW_SLOT:-2} i s t0=() t1=() g0=() g1=() w n rps
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		# shellcheck disable=SC2086 # the lists split into pids on purpose
		t0+=("$(cpu_ns ${FW_TASKS[$s]})")
		g0+=("$(cpu_ns "${FW_PID[$s]}")")
	done
	local k0 k1
	# shellcheck disable=SC2086
	k0=$(cpu_ns $FW_KS)
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		{
			TIMEFORMAT='%3U %3S'
			time in_ns "$s" nice -n "$FW_NICE" taskset -c 0 wrk -t1 -c50 -d"${dur}"s -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" >"$TMP/wrk-$s.txt"
		} 2>"$TMP/time-$s.txt" &
	done
	wait
	# shellcheck disable=SC2086
	k1=$(cpu_ns $FW_KS)
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		# shellcheck disable=SC2086
		t1+=("$(cpu_ns ${FW_TASKS[$s]})")
		g1+=("$(cpu_ns "${FW_PID[$s]}")")
	done
	local req=() total=0
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		grep -q 'Non-2xx\|Socket errors' "$TMP/wrk-$s.txt" && die "firewall round of $s: failed requests: $(grep 'Non-2xx\|Socket errors' "$TMP/wrk-$s.txt")"
		req+=("$(awk '/ requests in / { print $1 }' "$TMP/wrk-$s.txt")")
		total=$((total + req[i]))
	done
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk-$s.txt")
		w=$(tail -1 "$TMP/time-$s.txt")
		# ksoftirqd's time is shared out by requests.
		awk -v ns="$((t1[i] - t0[i]))" -v g="$((g1[i] - g0[i]))" -v k="$((k1 - k0))" -v w="$w" -v n="${req[i]}" -v total="$total" -v rps="$rps" '
			BEGIN { split(w, x, " "); printf "%s %.3f %.3f\n", rps, ((ns + k * n / total) / 1e9 + x[1] + x[2]) * 1e6 / n, g / 1e3 / n }'
	done
}

# fw_order Q N: the sides' indexes of quad Q over N modes, palindromic,
# starting at mode Q mod N.
fw_order() {
	local q=$1 n=$2 i fwd=()
	for ((i = 0; i < n; i++)); do fwd+=($(((q + i) % n))); done
	echo "${fwd[*]}"
	for ((i = n - 1; i >= 0; i--)); do printf ' %s' "${fwd[i]}"; done
}

# fw_slot_p50 SIDE QUADS PER: reads SIDE's "env took sandbox spawn boot"
# lines of cold starts (env c<side><quad>y<slot>x<i>) and prints per quad,
# in order, "quad took sandbox spawn boot": each the mean over the quad's
# two slots of the slot's p50 (the median of its PER starts). Fails
# unless every quad has two slots of PER starts each.
fw_slot_p50() {
	awk -v side="$1" -v quads="$2" -v per="$3" '
		function median(key, col,   n, i, j, x, v) {
			n = cnt[key]
			for (i = 1; i <= n; i++) v[i] = val[key, i, col]
			for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
			return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		}
		match($1, "^c" side "[0-9]+y[0-9]+x[0-9]+$") {
			slot = $1; sub(/x[0-9]+$/, "", slot)
			q = substr(slot, 3); sub(/y.*/, "", q)
			if (!(slot in cnt)) slots[q] = slots[q] " " slot
			n = ++cnt[slot]
			for (c = 2; c <= 5; c++) val[slot, n, c] = $c
		}
		END {
			for (q = 0; q < quads; q++) {
				k = split(slots[q], sl, " ")
				if (k != 2) exit 1
				for (c = 2; c <= 5; c++) sum[c] = 0
				for (i = 1; i <= 2; i++) {
					if (cnt[sl[i]] != per) exit 1
					for (c = 2; c <= 5; c++) sum[c] += median(sl[i], c)
				}
				printf "%d %.4f %.4f %.4f %.4f\n", q, sum[2] / 2, sum[3] / 2, sum[4] / 2, sum[5] / 2
			}
		}'
}

# fw_pairs "A1 A2 .." "B1 B2 .." [-diff]: benchtool paired over the quads'
# pairs; prints "median q1 q3 ci_lo ci_hi n".
fw_pairs() {
	paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) |
		"$BT" paired ${3:-} | jq -r '"\(.median) \(.q1) \(.q3) \(.ci_lo) \(.ci_hi) \(.n)"'
}

# fw_effect MEDIAN Q1 Q3 LO HI N: "median (quartiles) [interval]" with signs.
fw_effect() { awk -v m="$1" -v a="$2" -v b="$3" -v l="$4" -v h="$5" 'BEGIN { printf "%+.2f (%+.2f … %+.2f) [%+.2f … %+.2f]", m, a, b, l, h }'; }
# fw_aa_ok LO HI BOUND: an A/A interval that holds 0 and lies within ±BOUND.
fw_aa_ok() { awk -v l="$1" -v h="$2" -v b="$3" 'BEGIN { print (l <= 0 && h >= 0 && l > -b && h < b) ? "**met**" : "**not met**" }'; }
# fw_target MEDIAN HI LIMIT UNIT: the verdict on a cost wanted under LIMIT.
fw_target() {
	if lt "$2" "$3"; then
		echo "**met** (interval below $3 $4)"
	elif lt "$1" "$3"; then
		echo "**met** by the median; the interval reaches $3 $4"
	else
		echo "**not met**"
	fi
}

# scenario_firewall: §1c.
scenario_firewall() {
	section "1c. The env firewall's cost on the warm path and on a cold start"
	local modes i s ns
	read -ra modes <<<"$FW_MODES"
	local nm=${#modes[@]}
	((nm >= 2)) || die "BENCH_FW_MODES needs a base and at least one mode to compare with it"
	local -A FW_PID FW_LOG FW_TASKS
	# An earlier run that was killed left its namespaces: the number in
	# their names is the pid of that run, now gone.
	for ns in $(ip netns list | awk '$1 ~ /^egfw[a-z][0-9]+$/ { print $1 }'); do
		kill -0 "${ns:5}" 2>/dev/null || ip netns del "$ns"
	done
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		ns=$(fw_ns "$s")
		ip netns add "$ns" || die "ip netns add $ns"
		FW_NETNS+=("$ns")
		ip -n "$ns" link set lo up
		cmd "ip netns add $ns; ip -n $ns link set lo up  # firewall mode ${modes[i]}: its gateway, env and client run in there"
	done
	md "### 1c. What the env firewall costs (issue 12)"
	md ""
	md "Method: one gateway per mode, each in a network namespace of its own (lo only: the gateway, its envs'"
	md "veths and the client; connection tracking is per namespace), all running at once and equally warm."
	md "On the warm path every mode's load runs at the same time in each round (concurrent pairing), so that"
	md "the machine's speed and a neighbour's load at each instant hit all modes alike; cold starts take turns"
	md "in quads of slots in palindromic order (a b c c b a, the next quad starting at the next mode: b c a a c b),"
	md "so that drift hits every mode alike. Each round or quad gives one pair per mode against the base (a)."
	md "The tables give, over them, the median of the pairs' effect, their quartiles in ( ) and a 95 % bootstrap"
	md "interval of the median in [ ] (\`benchtool paired\`)."
	md "Modes: *off* (\`network.firewall: off\`); *on* (the default: the table, with the listeners' client traffic exempt from"
	md "connection tracking; the proxy dials envs inside their namespaces, so its traffic with them meets none of the host's"
	md "hooks); *tracked* (on, \`network.track_listeners: true\`);"
	md "*nonat* (on, the template with \`egress: none\` and no DNS forwarder); *nodns* (on, no DNS forwarder). A second *off* against the first is the A/A"
	md "check: it must show no difference, and its interval is the noise the method does not see through."
	md ""
	fw_warm
	fw_cold
	for ((i = 0; i < nm; i++)); do
		ip netns del "$(fw_ns "$(fw_side "$i")")"
	done
	FW_NETNS=()
}

# fw_warm: the warm path, pinned and loaded as in §1.
fw_warm() {
	local quads=${BENCH_FW_QUADS:-30} slot=${BENCH_FW_SLOT:-2} q i j s pid p a b c load0 load1
	((quads > 0)) || return 0
	local -A rps cpu gcpu qr qc
	FW_KS=$(pgrep -x 'ksoftirqd/[0-9]+' | tr '\n' ' ')
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		fw_start "${modes[i]}" "$s" "fw-warm-$s" pin
		in_ns "$s" curl -fsS -o /dev/null -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" || die "envgate $s (firewall ${modes[i]}) did not answer"
		read -r _ pid <<<"$(jq -r 'select(.message=="env ready" and .env=="bench") | "\(.addr) \(.pid)"' "${FW_LOG[$s]}" | tail -1)"
		[[ -n $pid ]] || die "firewall $s: no 'env ready' line for env bench"
		FW_TASKS[$s]=${FW_PID[$s]}
		for p in $(pgrep -g "$pid"); do
			taskset -a -p -c 0 "$p" >/dev/null
			renice -n "$FW_NICE" -p "$p" >/dev/null
			FW_TASKS[$s]+=" $p"
		done
		# Warm-up: the gateway's connections to its env, its heap.
		in_ns "$s" taskset -c 0 wrk -t1 -c50 -d2s -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" >/dev/null
	done
	cmd "nsenter --net=/run/netns/egfw<mode><pid> nice -n $FW_NICE taskset -c 0 wrk -t1 -c50 -d${slot}s -H 'Host: $HOSTHDR' http://127.0.0.1:$GW_PORT/healthz  # per slot; the env's processes taskset to CPU 0 and reniced to $FW_NICE"
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	for ((q = 0; q < quads; q++)); do
		((q % 4)) || log "1c. warm round $((q + 1))/$quads ($(cut -d' ' -f1 /proc/loadavg))"
		if [[ $FW_PAIRING == concurrent ]]; then
			i=0
			while read -r a b c; do
				s=$(fw_side "$i")
				rps[$s]+="$a " cpu[$s]+="$b " gcpu[$s]+="$c "
				i=$((i + 1))
			done < <(fw_round)
			((i == nm)) || die "firewall round $q: $i results for $nm modes"
			continue
		fi
		for j in $(fw_order "$q" "$nm"); do
			s=$(fw_side "$j")
			read -r a b <<<"$(fw_slot "$s")"
			qr[$q$s]=$(awk -v x="${qr[$q$s]:-0}" -v y="$a" 'BEGIN { print x + y }')
			qc[$q$s]=$(awk -v x="${qc[$q$s]:-0}" -v y="$b" 'BEGIN { print x + y / 2 }')
		done
		for ((i = 0; i < nm; i++)); do
			s=$(fw_side "$i")
			rps[$s]+="${qr[$q$s]} " cpu[$s]+="${qc[$q$s]} "
		done
	done
	load1=$(cut -d' ' -f1-3 /proc/loadavg)
	for ((i = 0; i < nm; i++)); do fw_stop "$(fw_side "$i")"; done

	local unit="quads of ${slot} s slots, palindromic (alternate pairing)" per="Per quad (sum of the mode's two slots' req/s; mean of their CPU µs/req), in order:"
	if [[ $FW_PAIRING == concurrent ]]; then
		unit="rounds of ${slot} s, every mode's wrk at once (concurrent pairing)"
		per="Per round (req/s; CPU µs/req), in order:"
	fi
	md "**Warm path**, pinned and loaded as in §1 (gateways on CPU 1, \`GOMAXPROCS=1\`; wrk and the envs on CPU 0;"
	md "\`wrk -t1 -c50\`, keep-alive), $quads $unit. *CPU µs/req* is the CPU time of wrk, the"
	md "gateway, the env's processes and ksoftirqd per request (every thread's sum_exec_runtime: this kernel has no"
	md "IRQ time accounting, so the softirq work of loopback and veth receive, conntrack and nftables included, is"
	md "charged to the task whose send triggered it, or to ksoftirqd, whose time is shared out by requests);"
	md "*the gateway's alone* is the gateway process's part of it, what §1's CPU 1 carries. The"
	md "firewall's cost is CPU per packet, in the kernel: at §1's saturation req/s falls as CPU per request rises, so"
	md "the verdict is on CPU per request, the figure a neighbour's load moves least. In concurrent pairing the modes"
	md "share the CPUs at every instant (each gets a third of them, so req/s are far below §1's and split by the"
	md "scheduler, not by cost): a neighbour's load and the machine's speed hit all alike, which makes the pairs"
	md "about three times tighter than alternating 1 s slots did on this machine (A/A quartiles ±2 % against ±6 %)."
	md "Load average (1, 5, 15 min) before: $load0; after: $load1."
	md ""
	md "| mode vs ${modes[0]} (a) | pairs | CPU µs/req, a ; mode (medians) | CPU per request: effect % | the gateway's alone (§1's CPU 1): effect % | req/s, a ; mode (medians) | req/s: effect % |"
	md "|---|---:|---|---|---|---|---|"
	local aa='' on='' on_r=''
	for ((i = 1; i < nm; i++)); do
		s=$(fw_side "$i")
		local er ec
		er=$(fw_pairs "${rps[a]}" "${rps[$s]}")
		ec=$(fw_pairs "${cpu[a]}" "${cpu[$s]}")
		local eg=n/a
		[[ -z ${gcpu[a]:-} ]] || eg=$(fw_effect $(fw_pairs "${gcpu[a]}" "${gcpu[$s]}"))
		# shellcheck disable=SC2086 # the lists split into numbers on purpose
		md "| ${modes[i]} ($s) | $quads | $(median ${cpu[a]}) ; $(median ${cpu[$s]}) | $(fw_effect $ec) | $eg | $(median ${rps[a]}) ; $(median ${rps[$s]}) | $(fw_effect $er) |"
		[[ ${modes[i]} != off || -n $aa ]] || aa=$ec
		[[ ${modes[i]} != on || -n $on ]] || { on=$ec on_r=$er; }
	done
	md ""
	md "$per"
	md ""
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		md "- ${modes[i]} ($s): ${rps[$s]% }; ${cpu[$s]% }"
	done
	md ""
	local m _q1 _q3 lo hi v
	if [[ -n $aa ]]; then
		read -r m _q1 _q3 lo hi _ <<<"$aa"
		v=$(fw_aa_ok "$lo" "$hi" 3)
		md "A/A check (off against off): CPU per request $(fw_effect $aa) %: the method sees no difference where there is"
		md "none when that interval holds 0, and tells a 3 % cost from noise when it lies within ±3 %: $v."
		summ "| 1c | A/A check of the paired method, warm: off vs off, CPU per request, median effect [95 % interval] (must hold 0, within ±3 %) | ≈ 0 % | $m % [$lo … $hi] | $v |"
	fi
	if [[ -n $on ]]; then
		read -r m _q1 _q3 lo hi _ <<<"$on"
		v=$(fw_target "$m" "$hi" 3 %)
		local rm rlo rhi
		read -r rm _q1 _q3 rlo rhi _ <<<"$on_r"
		md "Warm path cost of the firewall (on against off): CPU per request $m % (95 % interval $lo … $hi %; wanted: under 3 %): $v."
		md "req/s: $rm % ($rlo … $rhi %)."
		md ""
		summ "| 1c | warm path cost of the env firewall: CPU per request on vs off, median of pairs [95 % interval] (issue 12) | < 3 % | $m % [$lo … $hi]; req/s $rm % | $v |"
	fi
}

# fw_cold: cold starts, BENCH_FW_COLD_PER_SLOT (3) fresh envs one after
# another per slot, in the same palindromic quads (gateways not pinned,
# as in §2). Each slot gives the p50 of its starts.
fw_cold() {
	local quads=${BENCH_FW_COLD_QUADS:-450} per=${BENCH_FW_COLD_PER_SLOT:-3} batch=${BENCH_FW_COLD_BATCH:-10} q s i load0 load1 t0 t1
	((quads > 0)) || return 0
	((per > 0)) || die "BENCH_FW_COLD_PER_SLOT must be at least 1"
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		# No env stops while idle: benchtool stops each batch's envs.
		FW_IDLE=1h fw_start "${modes[i]}" "$s" "fw-cold-$s"
	done
	local targets=()
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		targets+=("$s=/run/netns/$(fw_ns "$s"),127.0.0.1:$GW_PORT,$TMP/state-fw-cold-$s/run/egfw$s.sock")
	done
	cmd "benchtool coldquads -quads $quads -per $per -batch $batch -pairing $FW_COLD_PAIRING -hosts 'c{{.Mode}}{{.Quad}}y{{.Slot}}x{{.I}}.localhost' -path /healthz a=/run/netns/egfwa<pid>,127.0.0.1:$GW_PORT,state-fw-cold-a/run/egfwa.sock b=... > cold.json"
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	t0=$SECONDS
	log "1c. cold: $quads quads of $per starts per slot ($(cut -d' ' -f1 /proc/loadavg))"
	# One process for every slot: nothing but the requests runs between
	# two starts (see benchtool's coldquads).
	"$BT" coldquads -quads "$quads" -per "$per" -batch "$batch" -pairing "$FW_COLD_PAIRING" -hosts 'c{{.Mode}}{{.Quad}}y{{.Slot}}x{{.I}}.localhost' -path /healthz "${targets[@]}" >"$TMP/cold.json" ||
		die "firewall cold starts: benchtool coldquads failed"
	t1=$SECONDS
	load1=$(cut -d' ' -f1-3 /proc/loadavg)
	for ((i = 0; i < nm; i++)); do fw_stop "$(fw_side "$i")"; done
	# Per slot: the p50 of its starts' env ready, of each phase and (from
	# benchtool) of TTFB; per quad and mode: the mean of its two slots'.
	local -A ready ph1 ph2 ph3 tt
	local a b c d vals
	for ((i = 0; i < nm; i++)); do
		s=$(fw_side "$i")
		vals=$(jq -r 'select(.message=="env ready" and (.env|startswith("c"))) | "\(.env) \(.took) \(.sandbox) \(.spawn) \(.boot)"' "${FW_LOG[$s]}" |
			fw_slot_p50 "$s" "$quads" "$per") || die "firewall cold starts of $s: not $per 'env ready' lines in every slot"
		while read -r q a b c d; do
			ready[$s]+="$a " ph1[$s]+="$b " ph2[$s]+="$c " ph3[$s]+="$d "
		done <<<"$vals"
		tt[$s]=$(jq -r --arg s "$s" '.ttfb_ms[$s] | map(tostring) | join(" ")' "$TMP/cold.json")
	done
	local unit="quads of $per cold starts per slot, one after another, the modes taking turns in palindromic order (alternate pairing)"
	[[ $FW_COLD_PAIRING != concurrent ]] ||
		unit="rounds of two slots of $per cold starts each, one after another, every mode's slot at the same time (concurrent pairing)"
	md "**Cold starts**, $quads $unit (\`benchtool coldquads -per $per\`, a fresh env each time, as in §2; gateways not pinned,"
	md "at nice $FW_NICE; after every $batch quads benchtool stops the envs they started, through each gateway's admin socket, and"
	md "waits until the CPUs are quiet: the kernel tears a network namespace down in the background, and envs stopping while"
	md "others start (as when they stopped after 5 s idle) slowed half the boots two- or threefold), $((t1 - t0)) s in all. *env ready* is the"
	md "gateway's own start time of the env (namespace, veth, firewall attach, spawn, readiness probe), from its \"env ready\""
	md "log line, with its phases: *sandbox* (namespace, veth, firewall attach), *spawn* (data dir, cgroup, the dev server's"
	md "fork), *boot* (until the readiness probe succeeded); *TTFB* is benchtool's, from dial to the response's headers. A"
	md "slot's figure is the p50 of its $per starts (each column's own median), a quad's or round's the mean of the mode's two"
	md "slots; effects are differences in ms (mode − a) over the quads or rounds. Each mode's figure is thus still the p50 of its"
	md "cold starts, paired in time with the base's. One benchtool process makes every request, from a socket it makes in each"
	md "gateway's namespace: nothing else starts between two cold starts (a benchtool started per slot made each slot's first"
	md "start about twice as slow as the next, and widened the pairs). Concurrent pairing (BENCH_FW_COLD_PAIRING=concurrent: every mode's slot at the same instant, as the"
	md "warm path pairs its load) is not the default: the three gateways' starts then share the two CPUs, which doubled each"
	md "start (env ready p50 40 ms against 21 ms) and widened the pairs (quartiles ±5.5 ms against ±3.5 ms) in a 300-round"
	md "run on this machine (with a benchtool per slot, envs stopping after 5 s idle). Load average before: $load0; after: $load1."
	md ""
	md "| mode vs ${modes[0]} (a) | quads | env ready p50 ms, a ; mode | env ready: effect ms | TTFB: effect ms | sandbox ms | spawn ms | boot ms |"
	md "|---|---:|---|---|---|---|---|---|"
	local aa='' on=''
	for ((i = 1; i < nm; i++)); do
		s=$(fw_side "$i")
		local er
		er=$(fw_pairs "${ready[a]}" "${ready[$s]}" -diff)
		# shellcheck disable=SC2086
		md "| ${modes[i]} ($s) | $quads | $(median ${ready[a]}) ; $(median ${ready[$s]}) | $(fw_effect $er) | $(fw_effect $(fw_pairs "${tt[a]}" "${tt[$s]}" -diff)) | $(fw_effect $(fw_pairs "${ph1[a]}" "${ph1[$s]}" -diff)) | $(fw_effect $(fw_pairs "${ph2[a]}" "${ph2[$s]}" -diff)) | $(fw_effect $(fw_pairs "${ph3[a]}" "${ph3[$s]}" -diff)) |"
		[[ ${modes[i]} != off || -n $aa ]] || aa=$er
		[[ ${modes[i]} != on || -n $on ]] || on=$er
	done
	md ""
	if [[ -n $aa ]]; then
		local m _q1 _q3 lo hi ok
		read -r m _q1 _q3 lo hi _ <<<"$aa"
		ok=$(fw_aa_ok "$lo" "$hi" 1)
		md "A/A check of cold starts (off against off): env ready $(fw_effect $aa) ms; holds 0 and within ±1 ms: $ok."
		summ "| 1c | A/A check of paired cold starts: off vs off, env ready median effect [95 % interval] (must hold 0, within ±1 ms) | ≈ 0 ms | $m ms [$lo … $hi] | $ok |"
	fi
	if [[ -n $on ]]; then
		local m _q1 _q3 lo hi v
		read -r m _q1 _q3 lo hi _ <<<"$on"
		v=$(fw_target "$m" "$hi" 1 ms)
		md "Cold start added by the firewall (env ready, on − off): $m ms (95 % interval $lo … $hi ms; wanted: under 1 ms): $v."
		summ "| 1c | cold start p50 added by the env firewall, env ready on − off: median of paired quads [95 % interval] (issue 12) | < 1 ms | $m ms [$lo … $hi] | $v |"
	fi
	md ""
}
