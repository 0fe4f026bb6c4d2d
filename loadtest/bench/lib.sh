# shellcheck shell=bash
# Helpers of loadtest/bench/run.sh: configs, the gateway, wrk, arithmetic,
# report lines. Sourced by run.sh, which sets the variables
# these use (TMP, BIN, GO, the ports and durations).

# cmd TEXT: record a command as run, for the Commands section; section
# starts a new heading there.
cmd() { grep -qxF -- "$*" "$CMDS" || printf '%s\n' "$*" >>"$CMDS"; }
section() { printf '\n# %s\n' "$*" >>"$CMDS"; }

# write_config FILE IDLE EXTRA_LIMITS TEMPLATE_ENV [TEMPLATE_EXTRA]: a gateway
# config of our instance. EXTRA_LIMITS is a YAML block under limits:,
# TEMPLATE_EXTRA lines added to the template (either may be empty);
# $NET_EXTRA, if set, is added to the network: map (e.g. "warm_pool: 4");
# $STATE_DIR, if set, replaces $TMP/state.
write_config() {
	local file=$1 idle=$2 limits=$3 tenv=$4 textra=${5:-}
	{
		echo "instance: $INSTANCE"
		echo "domains: [localhost]"
		echo "listen: {http: \"127.0.0.1:$GW_PORT\"}"
		echo "state_dir: ${STATE_DIR:-$TMP/state}"
		echo "tls: {mode: \"off\"}"
		echo "network: {pool: $POOL${NET_EXTRA:+, $NET_EXTRA}}"
		[[ -z $limits ]] || printf 'limits:\n%s\n' "$limits"
		echo "templates:"
		echo "  - name: demo"
		echo "    match: \"*\""
		echo "    command: [\"{{.Self}}\", \"demo-server\", \"--listen\", \":{{.Port}}\", \"--name\", \"{{.Name}}\", \"--data-dir\", \"{{.DataDir}}\"]"
		[[ -z $tenv ]] || echo "    env: {$tenv}"
		echo "    port: 3000"
		echo "    allow_root: true"
		echo "    ready: {http: /healthz, timeout: 30s}"
		echo "    idle_timeout: $idle"
		[[ -z $textra ]] || echo "$textra"
	} >"$file"
	[[ -n ${NOCHECK:-} ]] || "$BIN" --config "$file" config --check >/dev/null || die "config $file rejected"
}

# supports LIMITS [TEMPLATE_EXTRA]: whether this envgate accepts a config
# with those additions (and $NET_EXTRA), for features that may not exist
# in every version.
supports() {
	local f=$TMP/probe.yaml
	NOCHECK=1 write_config "$f" 15m "$1" "" "${2:-}"
	"$BIN" --config "$f" config --check >/dev/null 2>&1
}

wait_port() { # wait_port HOST PORT
	for _ in $(seq 100); do
		(echo >"/dev/tcp/$1/$2") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on $1:$2"
}

# start_gateway NAME CONFIG [PREFIX...]: PREFIX is e.g. taskset/env pinning.
start_gateway() {
	local name=$1 cfg=$2
	shift 2
	GW_LOG=$TMP/gateway-$name.log
	! (echo >"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null || die "port $GW_PORT is already in use"
	cmd "${*:+$* }${GW_ENV_TEXT:+$GW_ENV_TEXT }bin/envgate --config $(basename "$cfg") --log-format json serve 2>gateway-$name.log &"
	"$@" "$BIN" --config "$cfg" --log-format json --log-level "${GW_LEVEL:-info}" serve 2>"$GW_LOG" &
	GW_PID=$!
	PIDS+=("$GW_PID")
	wait_port 127.0.0.1 "$GW_PORT"
	kill -0 "$GW_PID" 2>/dev/null || die "gateway $name exited: $(tail -3 "$GW_LOG")"
}

stop_proc() { # stop_proc PID: a process this script started
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	forget "$1"
}

stop_gateway() {
	kill -TERM "$GW_PID"
	wait "$GW_PID" || log "gateway exited with $?"
	forget "$GW_PID"
	local left
	left=$(ip netns list | grep -c "^$INSTANCE-" || true)
	left=$((left + $(ip -o link show | grep -c " $INSTANCE-[0-9]" || true)))
	if ((left)); then
		log "LEAK: $left namespaces/links of $INSTANCE left after the gateway stopped"
		LEAKS=$((LEAKS + left))
	fi
	GW_PID=
}

# env_ready ENV: "addr pid" of the env's last "env ready" log line.
env_ready() {
	jq -r --arg e "$1" 'select(.message=="env ready" and .env==$e) | "\(.addr) \(.pid)"' "$GW_LOG" | tail -1
}
count_ready() { # count_ready JQ_TEST_ON_ENV
	jq -r "select(.message==\"env ready\") | .env | select($1)" "$GW_LOG" | wc -l
}

# proc_ticks PID: user + system CPU ticks of a process (all its threads).
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wrk_run NAME URL PID: one warm-up, then a measured run on CPU 0; prints
# "rps p50_ms p99_ms non2xx errors cpu_us_per_request", the last being the
# CPU that process PID (the proxy, or for direct the server) spent per
# request: the per-core cost, whichever side limited the throughput.
wrk_run() {
	local name=$1 url=$2 pid=$3 out=$TMP/wrk-$1.txt t0 t1
	taskset -c 0 wrk -t1 -c50 -d1s -H "Host: $HOSTHDR" "$url" >/dev/null
	cmd "taskset -c 0 wrk -t1 -c50 -d${DUR}s --latency -H 'Host: $HOSTHDR' $url"
	t0=$(proc_ticks "$pid")
	taskset -c 0 wrk -t1 -c50 -d"${DUR}"s --latency -H "Host: $HOSTHDR" "$url" >"$out"
	t1=$(proc_ticks "$pid")
	awk -v ticks="$((t1 - t0))" -v hz="$TICK" '
		function msec(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /s$/) return v * 1000
			return v
		}
		/^ +99%/ { p99 = msec($2) }
		/^ +50%/ { p50 = msec($2) }
		/^Requests\/sec:/ { rps = $2 }
		/ requests in / { n = $1 }
		/Non-2xx or 3xx responses:/ { bad = $NF }
		/Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
		END { printf "%.0f %.3f %.3f %d %d %.1f\n", rps, p50, p99, bad, errs, n ? ticks / hz * 1e6 / n : 0 }
	' "$out"
}

# median N...: the median of numbers (the mean of the middle two if even).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# ratio_range "A1 A2 .." "B1 B2 ..": lowest and highest of Ai/Bi.
ratio_range() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		n = split(a, x, " "); split(b, y, " ")
		for (i = 1; i <= n; i++) { r = x[i] / y[i]; if (i == 1 || r < lo) lo = r; if (i == 1 || r > hi) hi = r }
		printf "%.2f–%.2f", lo, hi
	}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
verdict() { if "$@"; then echo "**met**"; else echo "**not met**"; fi; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

# md LINE: a line of the report's body.
md() { printf '%s\n' "$*" >>"$MD"; }
# summ ROW: a row of the summary table at the top of BENCHMARKS.md.
summ() { printf '%s\n' "$*" >>"$SUM"; }

# busy_pct SECONDS: how busy the CPUs were (all processes) over a quiet
# wait, to tell a reader whether something else shared the machine.
busy_pct() {
	local a b
	read -ra a </proc/stat
	sleep "$1"
	read -ra b </proc/stat
	awk -v u="$((b[1] + b[2] + b[3] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[6] - a[7] - a[8]))" \
		-v i="$((b[4] + b[5] - a[4] - a[5]))" 'BEGIN { printf "%.0f", 100 * u / (u + i) }'
}

