#!/usr/bin/env bash
# envgate's side-by-side benchmarks (`make bench` runs this after the Go
# micro-benchmarks). As root, on a machine with at least 2 cores, it runs:
#   1. warm throughput and p99 per core: envgate vs direct vs Caddy vs nginx
#   2. cold-start overhead over many cold starts (minus the server's own boot)
#   3. thundering herds: 1,000 requests to one cold env; 200 cold envs at once
#   4. churn: zipf traffic over 2,000 env names for 60 s under an env cap
# plus a CPU profile of the warm path, and writes BENCHMARKS.md with the
# machine, the exact commands and every figure as a ratio measured in the same
# run. Every gateway it starts has its own instance (egbench), state dir and
# ports; traffic goes only to loopback and to the namespaces that gateway made.
#
# Knobs (environment): BENCH_OUT (default BENCHMARKS.md at the repo root),
# BENCH_DURATION (s per wrk run, 5), BENCH_ROUNDS (5), BENCH_COLD_N (100), BENCH_CHURN_S (60).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
GO=${GO:-go}
BIN=$ROOT/bin/envgate
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
DUR=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-5}
COLD_N=${BENCH_COLD_N:-100}
CHURN_S=${BENCH_CHURN_S:-60}
INSTANCE=egbench
POOL=10.215.0.0/16
GW_PORT=18480 CADDY_PORT=18481 NGINX_PORT=18482 PPROF_PORT=18483
HOSTHDR=bench.localhost

log() { printf '[bench %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces); run: sudo make bench"
(($(nproc) >= 2)) || die "needs 2 cores: one for the proxy, one for the load generator and the env's server"
[[ -x $BIN ]] || die "$BIN missing: run make build"

# ---- tools -----------------------------------------------------------------
install_tools() {
	local need=()
	command -v wrk >/dev/null || need+=(wrk)
	command -v caddy >/dev/null || need+=(caddy)
	command -v nginx >/dev/null || need+=(nginx-light)
	command -v jq >/dev/null || need+=(jq)
	command -v curl >/dev/null || need+=(curl)
	command -v taskset >/dev/null || need+=(util-linux)
	command -v ip >/dev/null || need+=(iproute2)
	((${#need[@]})) || return 0
	log "installing ${need[*]}"
	# Keep the packages' services (nginx on :80, caddy) from starting.
	local policy=/usr/sbin/policy-rc.d made=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
	fi
	local ok=1
	DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null || ok=
	[[ -z $made ]] || rm -f "$policy"
	[[ -n $ok ]] || die "apt-get install ${need[*]} failed"
	# Debian starts them when it can; these benchmarks start their own.
	if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
		systemctl stop nginx caddy 2>/dev/null || true
	fi
}
install_tools

TMP=$(mktemp -d /tmp/envgate-bench.XXXXXX)
PIDS=()
# forget PID: drop a process that has been waited for, so cleanup never
# signals a reused PID.
forget() {
	local keep=() p
	for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}
cleanup() {
	local rc=$?
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	# A gateway that died uncleanly may leave namespaces: remove ours only.
	if ip netns list 2>/dev/null | grep -q "^$INSTANCE-"; then
		"$BIN" --config "$TMP/gc.yaml" gc >/dev/null 2>&1 || true
	fi
	[[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "building benchtool"
"$GO" build -o "$TMP/benchtool" ./loadtest/bench/benchtool
BT=$TMP/benchtool

# ---- helpers ---------------------------------------------------------------
CMDS=$TMP/commands.md
: >"$CMDS"
# cmd TEXT: record a command as run, for the Commands section; section
# starts a new heading there.
cmd() { printf '%s\n' "$*" >>"$CMDS"; }
section() { printf '\n# %s\n' "$*" >>"$CMDS"; }

# write_config FILE IDLE EXTRA_LIMITS TEMPLATE_ENV [TEMPLATE_EXTRA]: a gateway
# config of our instance. EXTRA_LIMITS is a YAML block under limits:,
# TEMPLATE_EXTRA lines added to the template (either may be empty).
write_config() {
	local file=$1 idle=$2 limits=$3 tenv=$4 textra=${5:-}
	{
		echo "instance: $INSTANCE"
		echo "domains: [localhost]"
		echo "listen: {http: \"127.0.0.1:$GW_PORT\"}"
		echo "state_dir: $TMP/state"
		echo "tls: {mode: \"off\"}"
		echo "network: {pool: $POOL}"
		[[ -z $limits ]] || printf 'limits:\n%s\n' "$limits"
		echo "templates:"
		echo "  - name: demo"
		echo "    match: \"*\""
		echo "    command: [\"{{.Self}}\", \"demo-server\", \"--listen\", \":{{.Port}}\", \"--name\", \"{{.Name}}\", \"--data-dir\", \"{{.DataDir}}\"]"
		[[ -z $tenv ]] || echo "    env: {$tenv}"
		echo "    port: 3000"
		echo "    ready: {http: /healthz, timeout: 30s}"
		echo "    idle_timeout: $idle"
		[[ -z $textra ]] || echo "$textra"
	} >"$file"
	[[ -n ${NOCHECK:-} ]] || "$BIN" --config "$file" config --check >/dev/null || die "config $file rejected"
}
write_config "$TMP/gc.yaml" 15m "" ""

# supports LIMITS [TEMPLATE_EXTRA]: whether this envgate accepts a config
# with those additions (features other engineers are landing).
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

GW_PID=
GW_LOG=
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

LEAKS=0
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
TICK=$(getconf CLK_TCK)

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

MD=$TMP/results.md
: >"$MD"
md() { printf '%s\n' "$*" >>"$MD"; }

# ---- 1. warm throughput, per core ------------------------------------------
scenario_warm() {
	section "1. Warm throughput and p99, per core"
	log "1. warm throughput: starting envgate, Caddy and nginx on CPU 1"
	local cfg=$TMP/warm.yaml
	write_config "$cfg" 15m "" 'GOMAXPROCS: "1"'
	cmd "cat warm.yaml  # instance $INSTANCE, pool $POOL, template env GOMAXPROCS=1"
	GW_ENV_TEXT="ENVGATE_PPROF=127.0.0.1:$PPROF_PORT" ENVGATE_PPROF=127.0.0.1:$PPROF_PORT \
		start_gateway warm "$cfg" taskset -c 1 env GOMAXPROCS=1
	curl -fsS -o /dev/null -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" || die "envgate did not answer"
	local addr pid
	read -r addr pid <<<"$(env_ready bench)"
	[[ -n $addr ]] || die "no 'env ready' line for env bench"
	ip route get "${addr%:*}" | grep -q "dev $INSTANCE-" || die "no route to $addr via our veth"
	taskset -a -p -c 0 "$pid" >/dev/null
	cmd "taskset -a -p -c 0 <pid of env bench's demo-server>  # from the gateway's \"env ready\" line: addr=$addr"

	local cdir=$TMP/caddy
	mkdir -p "$cdir"
	cat >"$cdir/Caddyfile" <<-EOF
		{
			admin off
			auto_https off
		}
		http://:$CADDY_PORT {
			bind 127.0.0.1
			reverse_proxy $addr {
				transport http {
					keepalive_idle_conns_per_host 64
				}
			}
		}
	EOF
	cmd "taskset -c 1 env GOMAXPROCS=1 caddy run --adapter caddyfile --config Caddyfile  # reverse_proxy $addr, 64 idle upstream conns"
	HOME=$cdir XDG_DATA_HOME=$cdir XDG_CONFIG_HOME=$cdir GOMAXPROCS=1 \
		taskset -c 1 caddy run --adapter caddyfile --config "$cdir/Caddyfile" >"$cdir/log" 2>&1 &
	CADDY_PID=$!
	PIDS+=("$CADDY_PID")

	local ndir=$TMP/nginx
	mkdir -p "$ndir/body" "$ndir/proxy"
	cat >"$ndir/nginx.conf" <<-EOF
		worker_processes 1;
		daemon off;
		pid $ndir/nginx.pid;
		error_log $ndir/error.log warn;
		events { worker_connections 4096; }
		http {
			access_log off;
			client_body_temp_path $ndir/body;
			proxy_temp_path $ndir/proxy;
			upstream env { server $addr; keepalive 64; }
			server {
				listen 127.0.0.1:$NGINX_PORT;
				location / {
					proxy_pass http://env;
					proxy_http_version 1.1;
					proxy_set_header Connection "";
					proxy_set_header Host \$host;
				}
			}
		}
	EOF
	cmd "taskset -c 1 nginx -c nginx.conf  # worker_processes 1; upstream { server $addr; keepalive 64; } proxy_http_version 1.1"
	taskset -c 1 nginx -c "$ndir/nginx.conf" -p "$ndir" &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	wait_port 127.0.0.1 "$CADDY_PORT"
	wait_port 127.0.0.1 "$NGINX_PORT"

	local -A url=(
		[direct]="http://$addr/healthz"
		[envgate]="http://127.0.0.1:$GW_PORT/healthz"
		[caddy]="http://127.0.0.1:$CADDY_PORT/healthz"
		[nginx]="http://127.0.0.1:$NGINX_PORT/healthz"
	)
	local t
	for t in direct envgate caddy nginx; do
		curl -fsS -D - -o /dev/null -H "Host: $HOSTHDR" "${url[$t]}" | grep -qi '^x-envgate-env: bench' ||
			die "$t does not reach env bench"
	done
	# Rounds, each target once per round in a rotating order, so that a
	# noisy neighbour or drift hits every target alike; medians are reported.
	local npid
	npid=$(pgrep -P "$NGINX_PID" -x nginx | head -1)
	[[ -n $npid ]] || die "no nginx worker"
	local -A cpupid=([direct]=$pid [envgate]=$GW_PID [caddy]=$CADDY_PID [nginx]=$npid)
	local -A rps p50 p99 bad cpu
	local targets=(direct envgate caddy nginx) r i t errs a b c d e
	for ((r = 0; r < ROUNDS; r++)); do
		for ((i = 0; i < 4; i++)); do
			t=${targets[(i + r) % 4]}
			log "1. round $((r + 1))/$ROUNDS: wrk -> $t (${DUR}s)"
			read -r a b c d errs e <<<"$(wrk_run "$t-$r" "${url[$t]}" "${cpupid[$t]}")"
			rps[$t]+="$a " p50[$t]+="$b " p99[$t]+="$c " cpu[$t]+="$e " bad[$t]=$((${bad[$t]:-0} + d + errs))
		done
	done
	local -A mrps mp50 mp99 mcpu
	for t in "${targets[@]}"; do
		mrps[$t]=$(median ${rps[$t]})
		mp50[$t]=$(median ${p50[$t]})
		mp99[$t]=$(median ${p99[$t]})
		mcpu[$t]=$(median ${cpu[$t]})
	done

	md "## 1. Warm throughput and p99, per core"
	md ""
	md "Each proxy alone on CPU 1 (\`taskset -c 1\`; Go programs with GOMAXPROCS=1; nginx with one worker);"
	md "wrk and the env's demo server share CPU 0. All four targets reach the same demo server"
	md "process (env \`bench\`, in its namespace at \`$addr\`), path \`/healthz\` (a 2-byte body, so the"
	md "proxy, not the server, does most of the work), HTTP/1.1 keep-alive, \`wrk -t1 -c50 -d${DUR}s\`"
	md "after a 1 s warm-up. *direct* is wrk to the env's veth address with no proxy: CPU 1 is idle then."
	md "$ROUNDS rounds, each target once per round in rotating order; the table gives the median of the"
	md "rounds, and the last column the lowest and highest of the per-round ratios."
	md ""
	md "| target | req/s (median) | p50 ms | p99 ms | req/s per round | non-2xx + socket errors | envgate / target req/s | per-round range | CPU µs per request | per-core req/s (10⁶ / CPU µs) |"
	md "|---|---:|---:|---:|---|---:|---:|---|---:|---:|"
	for t in "${targets[@]}"; do
		md "| $t | ${mrps[$t]} | ${mp50[$t]} | ${mp99[$t]} | ${rps[$t]% } | ${bad[$t]} | $(ratio "${mrps[envgate]}" "${mrps[$t]}") | $(ratio_range "${rps[envgate]}" "${rps[$t]}") | ${mcpu[$t]} | $(awk -v c="${mcpu[$t]}" 'BEGIN { if (c > 0) printf "%.0f", 1e6 / c; else print "n/a" }') |"
	done
	md ""
	md "*CPU µs per request* is the CPU time (user + system, from /proc/PID/stat) of the proxy process"
	md "(nginx: its worker) divided by the requests wrk completed; for *direct* it is the demo server's."
	md "It includes the kernel's TCP work done in the process's system calls, and it does not depend on"
	md "which CPU limited the throughput, so *per-core req/s* is what one fully used core would carry."
	md ""
	local rd rc rn pc pn
	rd=$(ratio "${mrps[envgate]}" "${mrps[direct]}")
	rc=$(ratio "${mrps[envgate]}" "${mrps[caddy]}")
	rn=$(ratio "${mrps[envgate]}" "${mrps[nginx]}")
	pc=$(ratio "${mcpu[caddy]}" "${mcpu[envgate]}")
	pn=$(ratio "${mcpu[nginx]}" "${mcpu[envgate]}")
	WARM_PN=$pn
	md "| target (issue) | wanted | measured (median) | per-round range | verdict |"
	md "|---|---:|---:|---|---|"
	md "| envgate / direct req/s (issue 2) | ≥ 0.25 | $rd | $(ratio_range "${rps[envgate]}" "${rps[direct]}") | $(verdict ge "$rd" 0.25) |"
	md "| envgate / Caddy req/s (issue 6) | ≥ 1.5 | $rc | $(ratio_range "${rps[envgate]}" "${rps[caddy]}") | $(verdict ge "$rc" 1.5) |"
	md "| envgate / nginx req/s (issue 6) | ≥ 0.8 | $rn | $(ratio_range "${rps[envgate]}" "${rps[nginx]}") | $(verdict ge "$rn" 0.8) |"
	md "| envgate / Caddy per-core req/s | ≥ 1.5 | $pc | $(ratio_range "${cpu[caddy]}" "${cpu[envgate]}") | $(verdict ge "$pc" 1.5) |"
	md "| envgate / nginx per-core req/s | ≥ 0.8 | $pn | $(ratio_range "${cpu[nginx]}" "${cpu[envgate]}") | $(verdict ge "$pn" 0.8) |"
	md "| p99 envgate / nginx | (lower is better) | $(ratio "${mp99[envgate]}" "${mp99[nginx]}") | | |"
	md "| p99 envgate / Caddy | (lower is better) | $(ratio "${mp99[envgate]}" "${mp99[caddy]}") | | |"
	md ""

	profile_warm
	stop_proc "$CADDY_PID"
	stop_proc "$NGINX_PID"
	stop_gateway
}

# profile_warm: a CPU profile of envgate under the same wrk load.
profile_warm() {
	local secs=${BENCH_PROFILE_S:-10} prof=$TMP/cpu.pprof
	log "1b. CPU profile of the warm path (${secs}s)"
	cmd "ENVGATE_PPROF=127.0.0.1:$PPROF_PORT (set on the gateway above); during another wrk run:"
	cmd "curl -o cpu.pprof 'http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=$secs'"
	cmd "$GO tool pprof -top -nodecount=25 bin/envgate cpu.pprof"
	taskset -c 0 wrk -t1 -c50 -d"$((secs + 2))"s -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" >/dev/null &
	local wpid=$!
	PIDS+=("$wpid")
	sleep 1
	curl -fsS -o "$prof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=$secs"
	wait "$wpid" || true
	forget "$wpid"
	"$GO" tool pprof -top -nodecount=25 "$BIN" "$prof" 2>/dev/null >"$TMP/top.txt"
	"$GO" tool pprof -top -cum -nodecount=25 "$BIN" "$prof" 2>/dev/null >"$TMP/topcum.txt"
	"$GO" tool pprof -top -nodecount=100000 "$BIN" "$prof" 2>/dev/null >"$TMP/all.txt"
	# Group flat time by where it goes.
	local groups
	groups=$(awk '
		$1 ~ /s$/ && $2 ~ /%$/ && NF >= 6 {
			f = $2; sub(/%/, "", f); fn = $6
			for (i = 7; i <= NF; i++) fn = fn " " $i
			if (fn ~ /^(internal\/runtime\/syscall|syscall\.|runtime\/internal\/syscall)/) g = "system calls (read, write, epoll, connect): the kernel\x27s loopback and veth TCP work"
			else if (fn ~ /^runtime\.(malloc|gc|scan|mark|sweep|heap|\(\*msp|\(\*mcache|\(\*mheap|\(\*gcWork|nextFree|memclr|greyobject|findObject|wbBuf|bulkBarrier|typePointers|spanOf|newobject|makeslice|growslice)|^internal\/runtime\/gc/) g = "allocation and garbage collection"
			else if (fn ~ /^(runtime\.|internal\/runtime|internal\/sync|internal\/bytealg|aeshash|memeqbody|indexbytebody)/) g = "other Go runtime (scheduler, netpoller, locks, maps, memmove)"
			else if (fn ~ /^(net\/http|net\/textproto|net\/http\/httputil|bufio|net\/url)\./) g = "net/http (parsing, headers, the reverse proxy)"
			else if (fn ~ /^(net|internal\/poll)\./) g = "net and internal/poll"
			else if (fn ~ /envgate/) g = "envgate code"
			else g = "other (strings, sync, time, ...)"
			sum[g] += f
		}
		END { for (g in sum) printf "%.1f\t%s\n", sum[g], g }
	' "$TMP/all.txt" | sort -rn)
	md "### Where the warm path spends its CPU (envgate, one core)"
	md ""
	md "CPU profile of the gateway during a ${secs} s slice of the same wrk load (net/http/pprof, opt-in with"
	md "\`ENVGATE_PPROF=127.0.0.1:$PPROF_PORT\`). Flat time grouped by function family:"
	md ""
	md "| share of gateway CPU | where |"
	md "|---:|---|"
	while IFS=$'\t' read -r pct what; do md "| $pct % | $what |"; done <<<"$groups"
	md ""
	local sys rt gc nh own
	share() { awk -F'\t' -v k="$1" 'index($2, k) == 1 { print $1; f = 1 } END { if (!f) print 0 }' <<<"$groups"; }
	sys=$(share "system calls") rt=$(share "other Go runtime") gc=$(share "allocation") nh=$(share "net/http") own=$(share "envgate")
	md "Reading it: $sys % of the gateway's CPU is in system calls (per request: a read and a write on"
	md "the client's connection and on the env's, plus reads that find nothing yet and park the goroutine"
	md "in the netpoller); the kernel's loopback and veth TCP processing runs inside those calls, and every"
	md "proxy pays it alike. $rt % is the Go runtime's scheduling and netpoller, mostly net/http's"
	md "Transport handing each request between the handler goroutine and the upstream connection's"
	md "read and write loops; $gc % is allocation and GC; $nh % is net/http's parsing and header work;"
	md "envgate's own code (host parsing, lease, rewrite, request ID) is $own % flat."
	if lt "$WARM_PN" 0.8; then
		md "So the gap to nginx (per-core ratio $WARM_PN) is net/http's per-request cost rather than the gateway's logic."
	fi
	md ""
	md "Top functions by flat time (\`go tool pprof -top\`):"
	md ""
	md '```'
	sed -n '/flat%/,$p' "$TMP/top.txt" | head -26 >>"$MD"
	md '```'
	md ""
	md "Top functions by cumulative time (\`-top -cum\`):"
	md ""
	md '```'
	sed -n '/flat%/,$p' "$TMP/topcum.txt" | head -26 >>"$MD"
	md '```'
	md ""
}

# ---- 2. cold-start overhead ------------------------------------------------
# cold_run LABEL CONFIG: COLD_N cold requests, one at a time, to fresh envs.
# Sets COLD_JSON and READY_STATS.
cold_run() {
	local label=$1 cfg=$2
	start_gateway "cold-$label" "$cfg"
	[[ -z ${COLD_SETTLE:-} ]] || sleep "$COLD_SETTLE"
	COLD_JSON=$TMP/cold-$label.json
	cmd "benchtool cold -addr 127.0.0.1:$GW_PORT -hosts 'cold{{.I}}.localhost' -n $COLD_N -path /healthz  # one at a time, new connection each"
	"$BT" cold -addr "127.0.0.1:$GW_PORT" -hosts 'cold{{.I}}.localhost' -n "$COLD_N" -path /healthz >"$COLD_JSON"
	READY_STATS=$(jq -r 'select(.message=="env ready" and (.env|startswith("cold"))) | .took' "$GW_LOG" |
		jq -s 'sort | {n: length, p50: .[((length*0.5)|ceil)-1], p99: .[((length*0.99)|ceil)-1]}')
	stop_gateway
}

scenario_cold() {
	section "2. Cold-start overhead"
	log "2. cold start: $COLD_N boots of the demo server alone"
	local boot=$TMP/boot.json
	cmd "benchtool boot -n $COLD_N -- bin/envgate demo-server --listen 127.0.0.1:0 --name boot --data-dir DIR  # exec -> 'listening on' line"
	"$BT" boot -n "$COLD_N" -- "$BIN" demo-server --listen 127.0.0.1:0 --name boot --data-dir "$TMP/bootdata" >"$boot"
	local b50 b99
	b50=$(jq .boot_ms.p50 "$boot")
	b99=$(jq .boot_ms.p99 "$boot")

	log "2. cold start: $COLD_N cold requests through envgate"
	local cfg=$TMP/cold.yaml
	write_config "$cfg" 15m "" ""
	cold_run nopool "$cfg"
	local rows=() t50 t99 o50 o99 line
	t50=$(jq .ttfb_ms.p50 "$COLD_JSON")
	t99=$(jq .ttfb_ms.p99 "$COLD_JSON")
	o50=$(minus "$t50" "$b50")
	o99=$(minus "$t99" "$b99")
	COLD_O50=$o50
	line="| no warm pool | $(jq .ttfb_ms.n "$COLD_JSON") | $t50 | $t99 | $(jq '.p50*100|round/100' <<<"$READY_STATS") | $(jq '.p99*100|round/100' <<<"$READY_STATS") | $b50 | $b99 | **$o50** | **$o99** | $(jq .not_cold "$COLD_JSON") | $(jq .errors "$COLD_JSON") |"
	rows+=("$line")

	# The warm pool's key is probed where it may land: limits or template.
	local pooled=
	if supports "  warm_pool: 4"; then
		pooled="limits.warm_pool: 4"
		write_config "$cfg" 15m "  warm_pool: 4" ""
	elif supports "" "    warm_pool: 4"; then
		pooled="templates[0].warm_pool: 4"
		write_config "$cfg" 15m "" "" "    warm_pool: 4"
	fi
	if [[ -n $pooled ]]; then
		log "2. cold start again with a warm pool ($pooled)"
		cmd "# the same, with $pooled in the config"
		COLD_SETTLE=1 cold_run pool "$cfg"
		t50=$(jq .ttfb_ms.p50 "$COLD_JSON")
		t99=$(jq .ttfb_ms.p99 "$COLD_JSON")
		rows+=("| $pooled | $(jq .ttfb_ms.n "$COLD_JSON") | $t50 | $t99 | $(jq '.p50*100|round/100' <<<"$READY_STATS") | $(jq '.p99*100|round/100' <<<"$READY_STATS") | $b50 | $b99 | **$(minus "$t50" "$b50")** | **$(minus "$t99" "$b99")** | $(jq .not_cold "$COLD_JSON") | $(jq .errors "$COLD_JSON") |")
	fi

	md "## 2. Cold-start overhead"
	md ""
	md "The gateway's own share of a cold start: time to first byte of a request to a never-seen env,"
	md "minus the dev server's own exec→listening time. Method:"
	md ""
	md "- *boot*: \`benchtool boot\` execs \`envgate demo-server --listen 127.0.0.1:0 --data-dir DIR\` $COLD_N times,"
	md "  one at a time, and times from just before fork/exec to reading its \"listening on\" line."
	md "- *TTFB*: \`benchtool cold\` sends one request to each of $COLD_N distinct hosts (\`cold0.localhost\`, ...),"
	md "  one at a time, each on a new connection, and times from dial to response headers. *not cold* counts"
	md "  answers without the gateway's \`Envgate-Cold-Start\` header (it did not wait for a start)."
	md "- *env ready*: the gateway's own start time per env (its \"env ready\" log line, \`took\`: namespace +"
	md "  veth, spawn, readiness probe)."
	md "- *overhead* = TTFB − boot, at the same percentile (p50 − p50, p99 − p99): an estimate, since the two"
	md "  come from separate runs; it covers namespace and veth setup, spawn, the readiness probe's polling,"
	md "  and proxying the request."
	md ""
	md "| run | cold requests | TTFB p50 ms | TTFB p99 ms | env ready p50 ms | env ready p99 ms | boot p50 ms | boot p99 ms | overhead p50 ms | overhead p99 ms | not cold | errors |"
	md "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for line in "${rows[@]}"; do md "$line"; done
	md ""
	md "| target (issue) | wanted | measured | verdict |"
	md "|---|---:|---:|---|"
	md "| cold-start overhead p50 (issue 2) | < 15 ms | $COLD_O50 ms | $(verdict lt "$COLD_O50" 15) |"
	md "| overhead p50 / boot p50 | | $(ratio "$COLD_O50" "$b50") | |"
	md ""
	if [[ -z $pooled ]]; then
		md "No warm pool: this envgate does not accept a \`warm_pool\` key yet, so only the run without one was made."
		md ""
	fi
}

# ---- 3. thundering herds -----------------------------------------------------
scenario_herd() {
	section "3. Thundering herds"
	local cfg=$TMP/herd.yaml
	write_config "$cfg" 15m "" ""
	start_gateway herd "$cfg"
	log "3. herd: 1000 requests at once to one cold env"
	local h1=$TMP/herd1.json h2=$TMP/herd200.json
	cmd "benchtool herd -addr 127.0.0.1:$GW_PORT -hosts herd.localhost -envs 1 -n 1000  # all released at once, a connection each"
	"$BT" herd -addr "127.0.0.1:$GW_PORT" -hosts herd.localhost -envs 1 -n 1000 >"$h1"
	local starts1
	starts1=$(count_ready '. == "herd"')
	log "3. herd: 200 distinct cold envs at once"
	cmd "benchtool herd -addr 127.0.0.1:$GW_PORT -hosts 'h{{.I}}.localhost' -envs 200 -n 200"
	"$BT" herd -addr "127.0.0.1:$GW_PORT" -hosts 'h{{.I}}.localhost' -envs 200 -n 200 >"$h2"
	local starts2
	starts2=$(count_ready 'test("^h[0-9]+$")')
	stop_gateway

	md "## 3. Thundering herds"
	md ""
	md "\`benchtool herd\` opens one connection per request, holds every request at a barrier and releases"
	md "them together; *all answered* is from the release to the last response. *starts* counts the"
	md "gateway's \"env ready\" log lines for those envs (singleflight: one start per env)."
	md ""
	md "| herd | requests | ok | errors | starts (want) | all answered ms | p50 ms | p99 ms | max ms | statuses |"
	md "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	local f want starts name
	for f in "$h1" "$h2"; do
		if [[ $f == "$h1" ]]; then name="1,000 → 1 cold env"; want=1; starts=$starts1
		else name="200 → 200 cold envs"; want=200; starts=$starts2; fi
		md "| $name | $(jq .requests "$f") | $(jq .ok "$f") | $(jq .errors "$f") | $starts ($want) | $(jq .all_answered_ms "$f") | $(jq .latency_ms.p50 "$f") | $(jq .latency_ms.p99 "$f") | $(jq .latency_ms.max "$f") | $(jq -r '.status | to_entries | map("\(.key): \(.value)") | join(", ")' "$f") |"
	done
	md ""
	local e1 e2
	e1=$(jq .errors "$h1")
	e2=$(jq .errors "$h2")
	md "Exactly one start for the 1,000-request herd: $(verdict test "$starts1" = 1); every request answered 200 by its own env: $(verdict test "$e1$e2" = 00)."
	md ""
}

# ---- 4. churn ------------------------------------------------------------------
scenario_churn() {
	section "4. Churn"
	local cfg=$TMP/churn.yaml limits="" how idle=15m
	if supports "  max_envs: 100"; then
		limits="  max_envs: 100"
		how="\`limits.max_envs: 100\` (idle_timeout 15m, so every stop is an eviction by the cap)"
	else
		idle=2s
		how="**no \`limits.max_envs\` in this envgate yet**: idle_timeout 2s instead, so the reaper, not a cap, bounds the running envs"
	fi
	write_config "$cfg" "$idle" "$limits" ""
	cmd "cat churn.yaml  # ${limits:-idle_timeout: $idle}"
	start_gateway churn "$cfg"
	log "4. churn: zipf over 2000 envs for ${CHURN_S}s"
	local rep=$TMP/churn.json samples=$TMP/churn-running.txt
	(
		end=$((SECONDS + CHURN_S + 5))
		while ((SECONDS < end)); do
			ip netns list 2>/dev/null | grep -c "^$INSTANCE-" || true
			sleep 1
		done
	) >"$samples" &
	local spid=$!
	PIDS+=("$spid")
	local gen=(--addr "127.0.0.1:$GW_PORT" --hosts 'z{{.I}}.localhost' --envs 2000 --dist zipf:1.1
		--concurrency 16 --duration "${CHURN_S}s" --path /healthz --timeout 30s)
	local GEN_TEXT="--addr 127.0.0.1:$GW_PORT --hosts 'z{{.I}}.localhost' --envs 2000 --dist zipf:1.1 --concurrency 16 --duration ${CHURN_S}s --path /healthz --timeout 30s"
	if "$BIN" loadtest --help >/dev/null 2>&1; then
		LOADGEN="envgate loadtest"
		cmd "envgate loadtest ${GEN_TEXT} --json"
		"$BIN" loadtest "${gen[@]}" --json >"$rep"
	else
		# `envgate loadtest` itself does not run in this build: the same
		# generator (package loadtest), same options, through benchtool.
		LOADGEN="benchtool load (the loadtest package: \`envgate loadtest\` did not start in this build)"
		cmd "benchtool load ${GEN_TEXT}  # = envgate loadtest ... --json"
		"$BT" load "${gen[@]}" >"$rep"
	fi
	wait "$spid" || true
	forget "$spid"
	local starts stops maxrun
	starts=$(count_ready 'startswith("z")')
	stops=$(jq -r 'select(.message=="env stopped") | .env' "$GW_LOG" | wc -l)
	maxrun=$(sort -n "$samples" | tail -1)
	local leaks_before=$LEAKS
	stop_gateway
	local leaked=$((LEAKS - leaks_before))

	md "## 4. Churn"
	md ""
	md "$LOADGEN, closed loop of 16 workers for ${CHURN_S} s, hosts \`z0..z1999.localhost\` drawn zipf(1.1),"
	md "path \`/healthz\`, each answer checked for the right env (\`X-Envgate-Env\`). Bound on running envs: $how."
	md "The generator and the gateway share both cores (no pinning)."
	md ""
	md "| req/s | requests | ok | p50 ms | p99 ms | warm p99 ms | cold requests | cold p50 ms | cold p99 ms | starts | stops | most running (1 s samples) |"
	md "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	md "| $(jq '.throughput_rps|round' "$rep") | $(jq .requests "$rep") | $(jq .ok "$rep") | $(jq .latency_ms.overall.p50 "$rep") | $(jq .latency_ms.overall.p99 "$rep") | $(jq .latency_ms.warm.p99 "$rep") | $(jq .latency_ms.cold.count "$rep") | $(jq .latency_ms.cold.p50 "$rep") | $(jq .latency_ms.cold.p99 "$rep") | $starts | $stops | $maxrun |"
	md ""
	local mis s5xx s503
	mis=$(jq .errors.misroute "$rep")
	s503=$(jq '.status["503"] // 0' "$rep")
	s5xx=$(jq '[.status | to_entries[] | select((.key|tonumber) >= 500 and .key != "503") | .value] | add // 0' "$rep")
	md "| check | measured | verdict |"
	md "|---|---:|---|"
	md "| misroutes | $mis | $(verdict test "$mis" = 0) |"
	md "| 5xx other than 503 | $s5xx | $(verdict test "$s5xx" = 0) |"
	md "| 503 (documented: at capacity / shutting down) | $s503 | |"
	md "| errors by class | $(jq -r '.errors | to_entries | map(select(.value > 0)) | map("\(.key): \(.value)") | join(", ") | if . == "" then "none" else . end' "$rep") | |"
	md "| namespaces and veths of \`$INSTANCE\` left after the gateway stopped | $leaked | $(verdict test "$leaked" = 0) |"
	md ""
}

# busy_pct SECONDS: how busy the CPUs were (all processes) over a quiet
# wait, to tell a reader whether something else shared the machine.
busy_pct() {
	local a b
	a=($(head -1 /proc/stat))
	sleep "$1"
	b=($(head -1 /proc/stat))
	awk -v u="$((b[1] + b[2] + b[3] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[6] - a[7] - a[8]))" \
		-v i="$((b[4] + b[5] - a[4] - a[5]))" 'BEGIN { printf "%.0f", 100 * u / (u + i) }'
}

# ---- run -----------------------------------------------------------------------
log "tmp dir $TMP"
BUSY_BEFORE=$(busy_pct 2)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "CPU busy before the run (2 s, nothing of ours running): $BUSY_BEFORE %"
scenario_warm
scenario_cold
scenario_herd
scenario_churn
BUSY_AFTER=$(busy_pct 2)

# ---- BENCHMARKS.md -------------------------------------------------------------
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || rev="$rev (with uncommitted changes)"
{
	echo "# envgate benchmarks"
	echo ""
	echo "Written by \`make bench\` (\`loadtest/bench/run.sh\`) on $(date -u '+%Y-%m-%d %H:%M UTC'), envgate $rev."
	echo "Every comparison is a ratio of figures measured side by side in this one run, on this machine;"
	echo "absolute numbers move with the machine, the ratios much less. Regenerate with \`sudo make bench\`."
	echo ""
	echo "## Machine"
	echo ""
	echo "| | |"
	echo "|---|---|"
	echo "| cores (nproc) | $(nproc) |"
	echo "| CPU | ${cpu:-unknown} |"
	echo "| memory | $(free -g | awk '/^Mem:/ { print $2 " GiB" }') |"
	echo "| kernel | $(uname -sr) |"
	echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |"
	echo "| Go | $("$GO" version | sed 's/^go version //') |"
	echo "| wrk | $(wrk -v 2>&1 | head -1 | sed 's/ Copyright.*//') |"
	echo "| Caddy | $(caddy version 2>/dev/null | head -1) |"
	echo "| nginx | $(nginx -v 2>&1 | sed 's/^nginx version: //') |"
	echo "| curl | $(curl --version | head -1 | cut -d' ' -f1-2) |"
	echo "| CPU busy with other work, 2 s before / after the run | $BUSY_BEFORE % / $BUSY_AFTER % (load average before: $LOAD_BEFORE) |"
	echo ""
	if ((BUSY_BEFORE > 10 || BUSY_AFTER > 10)); then
		echo "**Noisy machine**: other processes used the CPUs around this run (see the row above), so"
		echo "absolute figures are low and the per-round ranges wide; the medians of interleaved rounds are the"
		echo "figures to trust. Rerun on an idle machine for publishable numbers."
		echo ""
	fi
	cat "$MD"
	echo "## Commands"
	echo ""
	echo "As run by the script, in order (config files are written into a temp dir; \`benchtool\` is"
	echo "\`loadtest/bench/benchtool\`, built by the script):"
	echo ""
	echo '```sh'
	cat "$CMDS"
	echo '```'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
((LEAKS == 0)) || die "$LEAKS namespaces/links leaked (see above)"
log "done in ${SECONDS}s: $OUT"
