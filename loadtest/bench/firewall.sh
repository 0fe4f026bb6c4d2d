# shellcheck shell=bash
# Scenario 1c of loadtest/bench/run.sh: what the env firewall (issue 12)
# costs the warm path and a cold start. Sourced by run.sh, which sets the
# variables these use (TMP, BIN, the ports); knobs BENCH_FW_ROUNDS (12),
# BENCH_FW_DURATION (s per wrk run, 3), BENCH_FW_MODES (default "off on
# tracked nonat"), BENCH_FW_COLD_CHUNKS (8 per mode) of BENCH_FW_COLD_N
# (10) cold starts. BENCH_FW_ROUNDS=0 runs the cold starts alone (the
# warm rounds take several minutes), BENCH_FW_COLD_CHUNKS=0 the warm part
# alone.
#
# Only the gateway can reach an env with the firewall on, so this
# compares envgate with itself, in modes:
#   off      network.firewall: off
#   on       the default: firewall on, the listeners' traffic and the
#            gateway's with envs untracked (no host firewall in 1c's
#            namespace)
#   tracked  on, with network.track_listeners: true (the clients'
#            packets tracked: what the firewall cost before it untracked
#            the listeners)
#   nonat    on, the template with egress: none and no DNS forwarder (no
#            NAT rule ever matches)
# A fresh gateway per run, pinned and loaded as in §1; each round runs
# every mode once, in an order rotated by round, and the report gives the
# median over rounds of each round's ratio to its own "off" run, so that
# drift and neighbours hit both sides of a ratio alike.

FW_MODES=${BENCH_FW_MODES:-off on tracked nonat}
# The gateway, the env and wrk run at this nice value (BENCH_FW_NICE,
# default -10), so that other users' processes on a shared machine take
# less of the CPUs from a run: the ratios sought are a few per cent.
FW_NICE=${BENCH_FW_NICE:--10}

# fw_config MODE FILE: the warm config of §1 in firewall mode MODE.
fw_config() {
	local mode=$1 file=$2 net tmpl=
	case $mode in
	off) net="firewall: off" ;;
	on) net="firewall: on" ;;
	tracked) net="firewall: on, track_listeners: true" ;;
	nonat)
		net="firewall: on"
		tmpl="    network: {egress: none}"
		;;
	*) die "unknown firewall mode $mode" ;;
	esac
	NET_EXTRA="$net${NET_EXTRA:+, $NET_EXTRA}" write_config "$file" 15m "" 'GOMAXPROCS: "1"' "$tmpl"
}

# fw_gateway MODE NAME: starts a gateway of MODE pinned as in §1, its env
# bench ready and moved to CPU 0; sets FW_PIDS (the gateway and the env's
# processes).
fw_gateway() {
	local mode=$1 name=$2 cfg=$TMP/fw-$1.yaml pid p
	fw_config "$mode" "$cfg"
	# nonat: no resolvers for the forwarder, so it does not start.
	if [[ $mode == nonat ]]; then
		GW_ENV_TEXT="ENVGATE_HOST_RESOLV_CONF=/dev/null" ENVGATE_HOST_RESOLV_CONF=/dev/null \
			start_gateway "$name" "$cfg" nice -n "$FW_NICE" taskset -c 1 env GOMAXPROCS=1
	else
		start_gateway "$name" "$cfg" nice -n "$FW_NICE" taskset -c 1 env GOMAXPROCS=1
	fi
	curl -fsS -o /dev/null -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" || die "envgate (firewall $mode) did not answer"
	read -r _ pid <<<"$(env_ready bench)"
	[[ -n $pid ]] || die "firewall $mode: no 'env ready' line for env bench"
	FW_PIDS=("$GW_PID")
	for p in $(pgrep -g "$pid"); do
		taskset -a -p -c 0 "$p" >/dev/null
		renice -n "$FW_NICE" -p "$p" >/dev/null
		FW_PIDS+=("$p")
	done
}

# ticks_of PID...: user + system ticks of the processes, summed. The
# kernel charges a softirq to the task it interrupted, so the loopback and
# veth receive work their sends trigger is in these (and in ksoftirqd's,
# when the kernel defers it there).
ticks_of() {
	local s=0 p
	for p in "$@"; do s=$((s + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
	echo "$s"
}
# machine_ticks: busy ticks of every CPU (user, nice, system, irq, softirq,
# steal), whoever ran.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# fw_wrk NAME: a warm-up second, then BENCH_FW_DURATION s of wrk on CPU 0
# against the gateway; prints "rps ours_us machine_us load": CPU µs per
# request of wrk, the gateway, the env and ksoftirqd together, and of the
# whole machine (other users' work included), and the 1-minute load.
fw_wrk() {
	local name=$1 out=$TMP/wrk-$1.txt dur=${BENCH_FW_DURATION:-3} t0 t1 m0 m1 w n rps ks
	local url="http://127.0.0.1:$GW_PORT/healthz"
	ks=$(pgrep -x 'ksoftirqd/[0-9]+' | tr '\n' ' ')
	taskset -c 0 wrk -t1 -c50 -d1s -H "Host: $HOSTHDR" "$url" >/dev/null
	cmd "nice -n $FW_NICE taskset -c 0 wrk -t1 -c50 -d${dur}s -H 'Host: $HOSTHDR' $url  # per mode and round; renice -n $FW_NICE the env's processes"
	# shellcheck disable=SC2086 # ks is a list of pids
	t0=$(ticks_of "${FW_PIDS[@]}" $ks)
	m0=$(machine_ticks)
	w=$({
		TIMEFORMAT='%U %S'
		time nice -n "$FW_NICE" taskset -c 0 wrk -t1 -c50 -d"${dur}"s -H "Host: $HOSTHDR" "$url" >"$out"
	} 2>&1)
	# shellcheck disable=SC2086
	t1=$(ticks_of "${FW_PIDS[@]}" $ks)
	m1=$(machine_ticks)
	n=$(awk '/ requests in / { print $1 }' "$out")
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
	grep -q 'Non-2xx\|Socket errors' "$out" && die "firewall run $name: failed requests: $(grep 'Non-2xx\|Socket errors' "$out")"
	awk -v ticks="$((t1 - t0))" -v m="$((m1 - m0))" -v w="$w" -v hz="$TICK" -v n="$n" -v rps="$rps" -v load="$(cut -d' ' -f1 /proc/loadavg)" '
		BEGIN { split(w, x, " "); printf "%s %.2f %.2f %s\n", rps, (ticks / hz + x[1] + x[2]) * 1e6 / n, m / hz * 1e6 / n, load }'
}

# fw_cold MODE K: a gateway of MODE, BENCH_FW_COLD_N cold starts of fresh envs one at
# a time (not pinned, as in §2); prints the TTFB p50 of the chunk and
# appends the gateway's "env ready" took values to $TMP/fw-ready-MODE.
fw_cold() {
	local mode=$1 k=$2 cfg=$TMP/fw-cold-$1.yaml json=$TMP/fw-cold-$1-$2.json n=${BENCH_FW_COLD_N:-10}
	fw_config "$mode" "$cfg"
	# Not pinned: as §2's cold runs.
	start_gateway "fw-cold-$mode" "$cfg"
	cmd "benchtool cold -addr 127.0.0.1:$GW_PORT -hosts 'f${mode}${k}x{{.I}}.localhost' -n $n -path /healthz  # per mode and chunk"
	"$BT" cold -addr "127.0.0.1:$GW_PORT" -hosts "f${mode}${k}x{{.I}}.localhost" -n "$n" -path /healthz >"$json"
	jq -r 'select(.message=="env ready" and (.env|startswith("f"))) | .took' "$GW_LOG" >>"$TMP/fw-ready-$mode"
	# Its phases (sandbox, spawn, boot), where the gateway logs them.
	jq -r 'select(.message=="env ready" and (.env|startswith("f")) and .boot != null) | "\(.sandbox) \(.spawn) \(.boot)"' "$GW_LOG" >>"$TMP/fw-phases-$mode"
	stop_gateway
	jq .ttfb_ms.p50 "$json"
}

# scenario_firewall runs §1c in a network namespace of its own (made
# here, lo only; BENCH_FW_HOSTNS=1 runs it in the host's instead): the
# kernel turns connection tracking on per network namespace, for every
# packet of it, as soon as any table there uses it, so in the host's one
# table of other software (a host firewall, Docker, another gateway)
# would make "off" pay for tracking too. The gateway, its envs' veths,
# wrk and the clients all live in that namespace, which is the host
# namespace as far as they can tell.
scenario_firewall() {
	if [[ -z ${FW_INNER:-} && -z ${BENCH_FW_HOSTNS:-} ]]; then
		local ns=egfwhost$$ part=$TMP/fw-part stale
		# An earlier run that was killed left its namespace: the number
		# in its name is the pid of that run, now gone.
		for stale in $(ip netns list | awk '$1 ~ /^egfwhost[0-9]+$/ { print $1 }'); do
			kill -0 "${stale#egfwhost}" 2>/dev/null || ip netns del "$stale"
		done
		ip netns add "$ns" || die "ip netns add $ns"
		ip -n "$ns" link set lo up
		log "1c. in network namespace $ns"
		FW_NS_NOTE="ip netns add $ns; ip -n $ns link set lo up; nsenter --net=/run/netns/$ns  # all of 1c runs in there" \
			FW_INNER=$part BENCH_ONLY=firewall BENCH_KEEP=${BENCH_KEEP:-} nsenter --net="/run/netns/$ns" "$ROOT/loadtest/bench/run.sh" ||
			{
				ip netns del "$ns"
				die "§1c in namespace $ns failed"
			}
		ip netns del "$ns"
		cat "$part.md" >>"$MD"
		cat "$part.sum" >>"$SUM"
		cat "$part.cmds" >>"$CMDS"
		return
	fi
	section "1c. The env firewall's cost on the warm path and on a cold start"
	[[ -z ${FW_NS_NOTE:-} ]] || cmd "$FW_NS_NOTE"
	local rounds=${BENCH_FW_ROUNDS:-12} modes mode r i m a b c d others
	read -ra modes <<<"$FW_MODES"
	[[ ${modes[0]} == off ]] || die "BENCH_FW_MODES must start with off (the base of every ratio)"
	local nm=${#modes[@]}
	local -A rps ours mach load
	# Tables of other software (other gateways, a host firewall) that
	# use connection tracking turn it on for "off" too.
	others=$(nft list tables 2>/dev/null | awk '$3 != "envgate-'"$INSTANCE"'" { printf "%s%s %s", sep, $2, $3; sep = ", " }')
	for m in "${modes[@]}"; do
		fw_config "$m" "$TMP/fw-$m.yaml"
		cmd "cat fw-$m.yaml  # warm.yaml in firewall mode $m (network: $(sed -n 's/^network: //p' "$TMP/fw-$m.yaml")$([[ $m == nonat ]] && echo "; template network: {egress: none}; serve with ENVGATE_HOST_RESOLV_CONF=/dev/null: no DNS forwarder"))"
	done
	for ((r = 0; r < rounds; r++)); do
		for ((i = 0; i < nm; i++)); do
			m=${modes[(i + r) % nm]}
			log "1c. round $((r + 1))/$rounds: firewall $m"
			fw_gateway "$m" "fw-$m"
			read -r a b c d <<<"$(fw_wrk "fw-$m-$r")"
			rps[$m]+="$a " ours[$m]+="$b " mach[$m]+="$c " load[$m]+="$d "
			stop_gateway
		done
	done
	# Cold starts: short chunks, modes alternating (off and on only: the
	# other modes differ from on per packet, not per start).
	local chunks=${BENCH_FW_COLD_CHUNKS:-8} k
	local -A ttfb
	: >"$TMP/fw-ready-off"
	: >"$TMP/fw-ready-on"
	: >"$TMP/fw-phases-off"
	: >"$TMP/fw-phases-on"
	for ((k = 0; k < chunks; k++)); do
		for m in off on; do
			((k % 2 == 0)) || m=$([[ $m == off ]] && echo on || echo off)
			log "1c. cold chunk $((k + 1))/$chunks: firewall $m (${BENCH_FW_COLD_N:-10} cold starts)"
			ttfb[$m]+="$(fw_cold "$m" "$k") "
		done
	done

	# per_round LIST_A LIST_B: median, lowest and highest of (b/a - 1) in %.
	per_round() {
		awk -v a="$1" -v b="$2" 'BEGIN {
			n = split(a, x, " "); split(b, y, " ")
			for (i = 1; i <= n; i++) printf "%f\n", (y[i] / x[i] - 1) * 100
		}' | sort -g | awk '{ v[NR] = $1 } END {
			med = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%+.1f %+.1f %+.1f\n", med, v[1], v[NR]
		}'
	}
	md "### 1c. What the env firewall costs (issue 12)"
	md ""
	if ((rounds == 0)); then
		fw_cold_report # BENCH_FW_ROUNDS=0: the cold starts alone
		return
	fi
	md "envgate alone, pinned and loaded as in §1 (gateway on CPU 1; wrk and the env on CPU 0; \`wrk -t1 -c50\`,"
	md "${BENCH_FW_DURATION:-3} s after a 1 s warm-up, keep-alive), a fresh gateway per run, in these modes: *off*"
	md "(\`network.firewall: off\`); *on* (the default: the table, with the listeners' client traffic and the"
	md "gateway's connections to envs exempt from connection tracking); *tracked* (on, with \`network.track_listeners: true\`: the clients'"
	md "packets tracked, as before that exemption); *nonat* (on, the template with \`egress: none\` and no DNS forwarder,"
	md "so no NAT rule ever matches). $rounds rounds, each running every mode once in an order rotated by round."
	md "The columns with *vs off* give, over the rounds, the median (and lowest … highest) of each round's"
	md "figure against the same round's *off*: the noise of a shared machine moves both sides of each ratio."
	md "*CPU ours* is the CPU time of wrk, the gateway, the env's processes and ksoftirqd per request: the"
	md "kernel charges loopback and veth receive work (conntrack and nftables included) to the task whose"
	md "send triggered it, or to ksoftirqd; *CPU machine* is every CPU's busy time per request, other users'"
	md "work included. The firewall's cost is per packet, in the kernel. The gateway, the env and wrk run at"
	md "nice $FW_NICE, so that other users' processes on a shared machine take less CPU from a run."
	if [[ -n ${FW_INNER:-} ]]; then
		md "All of it ran in a network namespace of its own (lo only: gateway, envs' veths, wrk), so that no"
		md "other software's tables turn connection tracking on for *off* (the kernel does that per namespace)."
	fi
	md ""
	md "| mode | req/s (median) | req/s vs off | CPU ours µs/req (median) | CPU ours vs off | CPU machine µs/req (median) | CPU machine vs off | load average (1 min) during its runs |"
	md "|---|---:|---|---:|---|---:|---|---|"
	local -A vrps vours vmach
	for m in "${modes[@]}"; do
		# shellcheck disable=SC2086 # the lists split into numbers on purpose
		local mr mo mm
		mr=$(median ${rps[$m]}) mo=$(median ${ours[$m]}) mm=$(median ${mach[$m]})
		if [[ $m == off ]]; then
			md "| off | $mr | | $mo | | $mm | | $(minmax ${load[$m]}) |"
			continue
		fi
		read -r vrps[$m] a b <<<"$(per_round "${rps[off]}" "${rps[$m]}")"
		local rr="${vrps[$m]} % ($a … $b)"
		read -r vours[$m] a b <<<"$(per_round "${ours[off]}" "${ours[$m]}")"
		local ro="${vours[$m]} % ($a … $b)"
		read -r vmach[$m] a b <<<"$(per_round "${mach[off]}" "${mach[$m]}")"
		md "| $m | $mr | $rr | $mo | $ro | $mm | ${vmach[$m]} % ($a … $b) | $(minmax ${load[$m]}) |"
	done
	md ""
	# Best of the rounds: a neighbour's work only ever slows a run down
	# and adds to its CPU per request (caches, less batching), so the
	# best run of each mode is the nearest to what it costs alone.
	md "Best of the $rounds rounds (highest req/s, lowest CPU ours per request) of each mode: on a shared machine"
	md "a neighbour only ever slows a run, so these are the nearest to each mode's cost alone."
	md ""
	md "| mode | best req/s | vs off | best CPU ours µs/req | vs off |"
	md "|---|---:|---:|---:|---:|"
	local -A brps bours
	for m in "${modes[@]}"; do
		# shellcheck disable=SC2086
		brps[$m]=$(printf '%s\n' ${rps[$m]} | sort -g | tail -1)
		# shellcheck disable=SC2086
		bours[$m]=$(printf '%s\n' ${ours[$m]} | sort -g | head -1)
		if [[ $m == off ]]; then
			md "| off | ${brps[$m]} | | ${bours[$m]} | |"
		else
			md "| $m | ${brps[$m]} | $(pct "${brps[off]}" "${brps[$m]}") % | ${bours[$m]} | $(pct "${bours[off]}" "${bours[$m]}") % |"
		fi
	done
	md ""
	md "Per run, in round order (req/s; CPU ours µs/req):"
	md ""
	for m in "${modes[@]}"; do md "- $m: ${rps[$m]% }; ${ours[$m]% }"; done
	md ""
	local loss=${vrps[on]#+}
	loss=$(awk -v v="$loss" 'BEGIN { printf "%.1f", -v }')
	local bloss
	bloss=$(awk -v a="${brps[off]}" -v b="${brps[on]}" 'BEGIN { printf "%.1f", (1 - b / a) * 100 }')
	md "Throughput lost with the firewall on: $loss % (median of the rounds' ratios; wanted: under 3 %), $bloss %"
	md "best against best; CPU per request (ours): ${vours[on]:-?} % (median of ratios), $(pct "${bours[off]}" "${bours[on]}") % best against best."
	md "Other software's nftables tables in this network namespace when it started (when one tracks connections,"
	md "*off* pays for connection tracking too): ${others:-none}."
	md ""
	summ "| 1c | warm req/s lost with the env firewall on: median of per-round ratios; best against best (issue 12) | < 3 % | $loss %; $bloss % | $(verdict lt "$loss" 3); $(verdict lt "$bloss" 3) |"
	fw_cold_report
}

# fw_cold_report: the cold starts' part of §1c's report, from
# scenario_firewall's chunks and ttfb (nothing without chunks).
fw_cold_report() {
	((chunks > 0)) || return 0
	local r_off r_on t_off t_on
	r_off=$(sort -g "$TMP/fw-ready-off" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
	r_on=$(sort -g "$TMP/fw-ready-on" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
	# shellcheck disable=SC2086
	t_off=$(median ${ttfb[off]}) t_on=$(median ${ttfb[on]})
	local dr dt
	dr=$(minus "$r_on" "$r_off") dt=$(minus "$t_on" "$t_off")
	md "Cold starts, off against on: $chunks chunks of ${BENCH_FW_COLD_N:-10} cold starts per mode (\`benchtool cold\`, one at a time,"
	md "fresh envs, as in §2; gateways not pinned), the modes alternating chunk by chunk. *env ready* is the"
	md "gateway's own start time per env (namespace, veth, firewall attach, spawn, probe), pooled over the"
	md "chunks; TTFB p50 is the median of the chunks' p50s. The firewall's own work in a start is done as"
	md "the sandbox is made (IPv6 off before its links are up, a default route: \`netns.Setup\`) and by"
	md "\`Firewall.Attach\` (a set element); the Go benchmark \`BenchmarkFirewallCreate\` (package netns) times"
	md "it alone, beside a sandbox made without it."
	md ""
	md "| firewall | env ready p50 ms | TTFB p50 ms (median of chunks) | TTFB p50 per chunk |"
	md "|---|---:|---:|---|"
	md "| off | $(printf '%.2f' "$r_off") | $t_off | ${ttfb[off]% } |"
	md "| on | $(printf '%.2f' "$r_on") | $t_on | ${ttfb[on]% } |"
	md "| on − off | **$dr** | **$dt** | |"
	md ""
	if [[ -s $TMP/fw-phases-off && -s $TMP/fw-phases-on ]]; then
		# p50 of column C of a phases file.
		local -A ph
		local m c
		for m in off on; do
			for c in 1 2 3; do
				ph[$m$c]=$(awk -v c="$c" '{ print $c }' "$TMP/fw-phases-$m" | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }')
			done
		done
		md "*env ready*'s phases, p50 of each alone (the gateway's \"env ready\" log line): *sandbox* (namespace, veth,"
		md "firewall attach), *spawn* (data dir, cgroup, the dev server's fork), *boot* (until its readiness probe"
		md "succeeded: the dev server's own start, the trampoline's mounts, the probes' packets)."
		md ""
		md "| firewall | sandbox ms | spawn ms | boot ms |"
		md "|---|---:|---:|---:|"
		md "| off | ${ph[off1]} | ${ph[off2]} | ${ph[off3]} |"
		md "| on | ${ph[on1]} | ${ph[on2]} | ${ph[on3]} |"
		md "| on − off | $(minus "${ph[on1]}" "${ph[off1]}") | $(minus "${ph[on2]}" "${ph[off2]}") | $(minus "${ph[on3]}" "${ph[off3]}") |"
		md ""
	fi
	summ "| 1c | cold start p50 added by the env firewall, env ready on − off (issue 12) | < 1 ms | $dr ms | $(verdict lt "$dr" 1) |"
}

# pct A B: (B / A - 1) in %, signed.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", (b / a - 1) * 100 }'; }

# minmax N...: "lowest–highest".
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s–%s", lo, hi }'; }
