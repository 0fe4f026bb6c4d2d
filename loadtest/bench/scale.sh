# shellcheck shell=bash
# Scenario 5 of loadtest/bench/run.sh: the gateway at scale. One gateway
# (max_envs 16384, as many as the /16 pool holds, set explicitly so a
# lower default cannot cap the run; max_starting at its default) grows its set of
# live demo envs step by step; at each step the script measures cold-start
# TTFB one request at a time, reads the gateway's RSS and threads, and at the
# end times SIGTERM until the gateway has exited and nothing of its instance
# is left. Writes scale.csv, scale.json and scale.svg (drawn by `benchtool
# plot`, gonum) into SCALE_DIR. Sourced by run.sh, which sets the variables
# these use (TMP, BIN, BT, OUT, INSTANCE, the ports).
#
# Knobs: SCALE_STEPS (live envs at each step, ascending; "0 500 1000 2000"),
# SCALE_COLD_N (sequential cold starts per step, 100), SCALE_GROW_C
# (requests in flight while growing, 16), SCALE_SETTLE (s of rest after each
# growth, 2), SCALE_STOP_WAIT (s to wait for the exit and the cleanup after
# SIGTERM, 120), SCALE_DIR (where the CSV, JSON and SVG go; default
# loadtest/bench/results for the default BENCH_OUT, else BENCH_OUT's dir),
# SCALE_QUIET_WAIT (s to wait at most, before the gateway starts, for the
# CPUs to be under 20 % busy, 60).

# instance_left: "namespaces links processes" of our instance still on the
# machine. Processes are found by their data dir under our state dir (every
# env's command line names it), so no other instance's count.
instance_left() {
	local ns links procs
	ns=$(ip netns list 2>/dev/null | grep -c "^$INSTANCE-" || true)
	links=$(ip -o link show 2>/dev/null | grep -c " $INSTANCE-[0-9]" || true)
	procs=$(pgrep -c -f -- "--data-dir $TMP/state/" || true)
	echo "$ns $links $procs"
}

# at_most A B, at_least A B: A is a number and A <= B (A >= B); "n/a" fails.
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a ~ /^[0-9.]+$/ && a + 0 <= b + 0) }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a ~ /^[0-9.]+$/ && a + 0 >= b + 0) }'; }

# proc_field PID FIELD: a number from /proc/PID/status (VmRSS in KiB, Threads).
proc_field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# exited PID: whether a child of ours has exited (a zombie still answers kill -0).
exited() {
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
	[[ -z $st || $st == Z ]]
}

scenario_scale() {
	section "5. Scale"
	local steps cold_n=${SCALE_COLD_N:-100} conc=${SCALE_GROW_C:-16} settle=${SCALE_SETTLE:-2}
	read -ra steps <<<"${SCALE_STEPS:-0 500 1000 2000}"
	local dir=${SCALE_DIR:-}
	if [[ -z $dir ]]; then
		if [[ -z ${BENCH_OUT:-} ]]; then dir=$ROOT/loadtest/bench/results; else dir=$(dirname "$OUT"); fi
	fi
	mkdir -p "$dir"
	# Each env runs about 15 tasks (its init and the demo server, Go
	# programs with their runtime's threads): 2,100 envs need about 32,000
	# pids, the whole of the kernel's default pid_max. Raised for the run,
	# as a host for thousands of envs sets it (docs/operations.md).
	local pid_max_was need
	pid_max_was=$(cat /proc/sys/kernel/pid_max)
	need=$(((${steps[-1]} + cold_n) * 16 + $(ps -e -L --no-headers | wc -l) + 4096))
	if ((pid_max_was < need)); then
		log "5. scale: kernel.pid_max $pid_max_was < $need tasks needed: raised to 4194304 for the run"
		echo 4194304 >/proc/sys/kernel/pid_max
	fi
	# Work left over from the scenarios before this one (the kernel frees
	# a gateway's namespaces after it has exited, in kworkers; a
	# neighbour's job) would be measured as part of the start rate. Wait
	# until the CPUs are quiet (under 20 % busy over 2 s), at most
	# SCALE_QUIET_WAIT s (60), and say how long it took.
	local quiet_t0=$SECONDS busy quiet_s
	while busy=$(busy_pct 2) && ((busy >= 20 && SECONDS - quiet_t0 < ${SCALE_QUIET_WAIT:-60})); do :; done
	quiet_s=$((SECONDS - quiet_t0))
	log "5. scale: CPUs ${busy} % busy over 2 s after ${quiet_s} s of waiting for the machine to settle"
	local cfg=$TMP/scale.yaml
	# The /16 pool holds 16,384 envs of a /30 each: room for the largest step
	# plus every step's cold starts.
	write_config "$cfg" 15m "  max_envs: 16384" ""
	cmd "cat scale.yaml  # = cold.yaml + max_envs 16384 (the pool's size), pool $POOL, max_starting default (2 × CPUs), idle_timeout 15m"
	start_gateway scale "$cfg"
	local scale_t0=$SECONDS

	local csv=$TMP/scale.csv rows=$TMP/scale-rows.jsonl
	echo "live_envs,live_measured,grown,grow_errors,starts_per_s,cold_n,cold_errors,cold_p50_ms,cold_p99_ms,ready_p50_ms,ready_p99_ms,rss_mib,threads,loadavg1" >"$csv"
	: >"$rows"
	local live=0 step grow gj cj rate gerr rss thr ns r50 r99 la ready
	for step in "${steps[@]}"; do
		grow=$((step - live))
		rate="" gerr=0
		if ((grow > 0)); then
			log "5. scale: growing the live set from $live to $step envs, $conc at a time"
			gj=$TMP/scale-grow-$step.json
			cmd "benchtool grow -addr 127.0.0.1:$GW_PORT -hosts 's${step}g{{.I}}.localhost' -envs $grow -concurrency $conc  # each host once"
			"$BT" grow -addr "127.0.0.1:$GW_PORT" -hosts "s${step}g{{.I}}.localhost" -envs "$grow" -concurrency "$conc" >"$gj"
			rate=$(jq '.starts_per_s*10|round/10' "$gj")
			gerr=$(jq .errors "$gj")
			((gerr == 0)) || log "5. scale: $gerr of $grow starts failed: $(jq -r .first_error "$gj")"
			live=$((live + $(jq .ok "$gj")))
			sleep "$settle"
		fi
		kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the scale run: $(tail -3 "$GW_LOG")"
		rss=$(awk -v k="$(proc_field "$GW_PID" VmRSS)" 'BEGIN { printf "%.1f", k / 1024 }')
		thr=$(proc_field "$GW_PID" Threads)
		read -r ns _ <<<"$(instance_left)"
		la=$(cut -d' ' -f1 /proc/loadavg)
		log "5. scale: $ns live envs (wanted $step): RSS $rss MiB, $thr threads; $cold_n cold starts one at a time"
		cj=$TMP/scale-cold-$step.json
		cmd "benchtool cold -addr 127.0.0.1:$GW_PORT -hosts 's${step}c{{.I}}.localhost' -n $cold_n -path /healthz  # at $step live envs"
		"$BT" cold -addr "127.0.0.1:$GW_PORT" -hosts "s${step}c{{.I}}.localhost" -n "$cold_n" -path /healthz >"$cj"
		live=$((live + $(jq .ttfb_ms.n "$cj")))
		# fromjson?: the gateway may be midway through writing its last line.
		ready=$(jq -rR --arg p "s${step}c" 'fromjson? | select(.message=="env ready" and (.env|startswith($p))) | .took' "$GW_LOG" |
			jq -s 'sort | {p50: (.[((length*0.5)|ceil)-1] // 0), p99: (.[((length*0.99)|ceil)-1] // 0)}')
		r50=$(jq '.p50*100|round/100' <<<"$ready")
		r99=$(jq '.p99*100|round/100' <<<"$ready")
		echo "$step,$ns,$grow,$gerr,${rate:-},$cold_n,$(jq .errors "$cj"),$(jq .ttfb_ms.p50 "$cj"),$(jq .ttfb_ms.p99 "$cj"),$r50,$r99,$rss,$thr,$la" >>"$csv"
	done
	local grown_s=$((SECONDS - scale_t0))

	# SIGTERM: until the process has exited, then until nothing of the
	# instance (namespaces, veths, env processes) is left.
	local at_term left t0 t_exit="" t_clean="" waited=${SCALE_STOP_WAIT:-120} now
	left=$(instance_left)
	read -r at_term _ <<<"$left"
	log "5. scale: SIGTERM with $at_term live envs (namespaces, links, env processes: $left)"
	cmd "kill -TERM <gateway pid>  # then poll: process exited; no namespace, veth or env process of $INSTANCE left"
	t0=$EPOCHREALTIME
	kill -TERM "$GW_PID"
	while :; do
		now=$EPOCHREALTIME
		if [[ -z $t_exit ]] && exited "$GW_PID"; then t_exit=$now; fi
		if [[ -n $t_exit ]]; then
			left=$(instance_left)
			if [[ $left == "0 0 0" ]]; then t_clean=$now; break; fi
		fi
		if awk -v a="$now" -v b="$t0" -v w="$waited" 'BEGIN { exit !(a - b > w) }'; then break; fi
		sleep 0.05
	done
	if [[ -z $t_exit ]]; then
		log "5. scale: the gateway did not exit within ${waited}s of SIGTERM: SIGKILL"
		kill -KILL "$GW_PID" 2>/dev/null || true
	fi
	wait "$GW_PID" 2>/dev/null || log "gateway exited with $?"
	forget "$GW_PID"
	GW_PID=
	left=$(instance_left)
	local exit_s clean_s
	exit_s=$(awk -v a="${t_exit:-0}" -v b="$t0" 'BEGIN { if (a == 0) print "n/a"; else printf "%.2f", a - b }')
	clean_s=$(awk -v a="${t_clean:-0}" -v b="$t0" 'BEGIN { if (a == 0) print "n/a"; else printf "%.2f", a - b }')
	if [[ $left != "0 0 0" ]]; then
		local lns llinks lprocs
		read -r lns llinks lprocs <<<"$left"
		log "LEAK: $lns namespaces, $llinks links, $lprocs env processes of $INSTANCE left ${waited}s after SIGTERM"
		LEAKS=$((LEAKS + lns + llinks + lprocs))
	fi
	log "5. scale: exited ${exit_s}s after SIGTERM, clean ${clean_s}s after (left: $left)"
	echo "$pid_max_was" >/proc/sys/kernel/pid_max

	# The files: CSV (the table), JSON (the same and the shutdown), SVG.
	local rev_text="envgate $REV"
	jq -R -s --arg rev "$REV" --argjson peak "$at_term" --arg exit_s "$exit_s" --arg clean_s "$clean_s" --arg left "$left" '
		split("\n") | map(select(length > 0) | split(",")) | .[0] as $h
		| { envgate: $rev,
		    steps: [ .[1:][] | [ $h, . ] | transpose | map({ (.[0]): (.[1] | tonumber? // null) }) | add ],
		    shutdown: { live_envs: $peak, exit_s: ($exit_s | tonumber? // null), clean_s: ($clean_s | tonumber? // null), left: $left } }
	' "$csv" >"$TMP/scale.json"
	cp "$csv" "$dir/scale.csv"
	cp "$TMP/scale.json" "$dir/scale.json"
	cmd "benchtool plot -in scale.csv -out scale.svg -title '...'"
	"$BT" plot -in "$dir/scale.csv" -out "$dir/scale.svg" -title "envgate at scale ($rev_text, $(nproc) cores)" >/dev/null
	local img
	img=$(realpath --relative-to="$(dirname "$OUT")" "$dir/scale.svg")

	# Targets, from the first step (fewest envs) to the last.
	local first last p50_0 p50_n ratio_n min_rate thr_1000 rss_1000
	first=${steps[0]} last=${steps[-1]}
	p50_0=$(awk -F, -v s="$first" 'NR > 1 && $1 == s { print $8 }' "$csv")
	p50_n=$(awk -F, -v s="$last" 'NR > 1 && $1 == s { print $8 }' "$csv")
	ratio_n=$(ratio "$p50_n" "$p50_0")
	min_rate=$(awk -F, 'NR > 1 && $5 != "" { if (m == "" || $5 < m) m = $5 } END { print (m == "" ? "n/a" : m) }' "$csv")
	thr_1000=$(awk -F, 'NR > 1 && $1 == 1000 { print $13 }' "$csv")
	rss_1000=$(awk -F, 'NR > 1 && $1 == 1000 { print $12 }' "$csv")

	md "## 5. Scale"
	md ""
	md "One gateway (\`scale.yaml\` = \`cold.yaml\` + \`max_envs: 16384\`: the demo template, pool $POOL,"
	md "\`max_starting\` at its default of 2 × CPUs, idle_timeout 15m so nothing is reaped) grows its set"
	md "of live envs to each step in turn. *start rate* is the growth to that step: \`benchtool grow\` sends"
	md "one request to each new host, $conc in flight at once over keep-alive connections, and divides the"
	md "envs that answered by the time from the first request to the last answer. Then, after ${settle} s of"
	md "rest, *RSS* and *threads* of the gateway process are read from /proc/PID/status (VmRSS, Threads)"
	md "and \`benchtool cold\` starts $cold_n more envs one at a time, each on a new connection: *cold TTFB*"
	md "is from dial to response headers (latency, not throughput), *env ready* the gateway's own start"
	md "time from its log. Those $cold_n envs stay, so the next step grows from there. *live* is the"
	md "number of the instance's namespaces counted before the cold starts. Whole scenario: ${grown_s} s"
	md "to grow and measure, then the shutdown. Before the gateway started, the script waited ${quiet_s} s for the CPUs to"
	md "settle (${busy} % busy over 2 s), so that work left over from earlier scenarios is not measured here."
	md ""
	md "![cold-start TTFB p50 and p99, gateway RSS and threads against live envs]($img)"
	md ""
	md "| live envs (step) | live (counted) | start rate to this step, starts/s | grow errors | cold TTFB p50 ms | cold TTFB p99 ms | env ready p50 ms | env ready p99 ms | cold errors | gateway RSS MiB | gateway threads | load avg (1 min) |"
	md "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	while IFS=, read -r s lm _ ge sr _ ce c50 c99 e50 e99 rs th l1; do
		md "| $s | $lm | ${sr:-–} | $ge | $c50 | $c99 | $e50 | $e99 | $ce | $rs | $th | $l1 |"
	done < <(tail -n +2 "$csv")
	md ""
	md "SIGTERM with $at_term live envs: the gateway exited after **${exit_s} s**; its namespaces, veths"
	md "and env processes were all gone after **${clean_s} s** (left after ${waited} s: namespaces, links, processes = $left)."
	md "The figures are also in \`$(realpath --relative-to="$(dirname "$OUT")" "$dir")/scale.csv\` and \`scale.json\`."
	md ""
	md "| target (issue 10) | wanted | measured | verdict |"
	md "|---|---:|---:|---|"
	md "| cold-start TTFB p50 at $last live envs / p50 at $first | ≤ 2 | $ratio_n ($p50_n / $p50_0 ms) | $(verdict at_most "$ratio_n" 2) |"
	md "| slowest start rate while growing to $last envs | ≥ 150 starts/s | $min_rate | $(verdict at_least "$min_rate" 150) |"
	md "| SIGTERM with $at_term envs: exited; nothing left | ≤ 10 s | $exit_s s; $clean_s s | $(verdict at_most "$clean_s" 10) |"
	if [[ -n $thr_1000 ]]; then
		md "| gateway threads; RSS at 1000 live envs (issue 10, test 4) | < 100; ≤ 150 MiB | $thr_1000; $rss_1000 MiB | $(verdict at_most "$thr_1000" 99), $(verdict at_most "$rss_1000" 150) |"
	fi
	md ""
	summ "| 5 | cold-start TTFB p50 at $last live envs / at $first (issue 10) | ≤ 2 | $ratio_n | $(verdict at_most "$ratio_n" 2) |"
	summ "| 5 | slowest start rate growing to $last live envs (issue 10) | ≥ 150 starts/s | $min_rate | $(verdict at_least "$min_rate" 150) |"
	summ "| 5 | SIGTERM with $at_term live envs until nothing is left (issue 10) | ≤ 10 s | $clean_s s | $(verdict at_most "$clean_s" 10) |"
}
