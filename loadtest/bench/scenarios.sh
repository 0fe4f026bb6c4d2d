# shellcheck shell=bash
# Scenarios 2-4 of loadtest/bench/run.sh: cold starts, thundering herds,
# churn. Sourced by run.sh, which sets the variables
# these use (TMP, BIN, GO, the ports and durations).

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
	# The program the gateway runs for "{{.Self}} demo-server" (beside $BIN).
	cmd "benchtool boot -n $COLD_N -get /healthz -- bin/envgate-demo demo-server --listen 127.0.0.1:0 --name boot --data-dir DIR  # exec -> 'listening on' line -> first byte of GET /healthz"
	"$BT" boot -n "$COLD_N" -get /healthz -- "$DEMO_BIN" demo-server --listen 127.0.0.1:0 --name boot --data-dir "$TMP/bootdata" >"$boot"
	local b50 b99 l50 l99
	b50=$(jq .answer_ms.p50 "$boot")
	b99=$(jq .answer_ms.p99 "$boot")
	l50=$(jq .boot_ms.p50 "$boot")
	l99=$(jq .boot_ms.p99 "$boot")

	log "2. cold start: $COLD_N cold requests through envgate"
	local cfg=$TMP/cold.yaml
	write_config "$cfg" 15m "" ""
	cmd "cat cold.yaml  # warm.yaml without the template's env (GOMAXPROCS as the machine gives); nothing pinned"
	cold_run nopool "$cfg"
	local rows=() t50 t99 o50 o99 line
	t50=$(jq .ttfb_ms.p50 "$COLD_JSON")
	t99=$(jq .ttfb_ms.p99 "$COLD_JSON")
	o50=$(minus "$t50" "$b50")
	o99=$(minus "$t99" "$b99")
	COLD_O50=$o50
	COLD_R50=$(jq '.p50*100|round/100' <<<"$READY_STATS")
	local t50_nopool=$t50
	line="| no warm pool | $(jq .ttfb_ms.n "$COLD_JSON") | $t50 | $t99 | $(jq '.p50*100|round/100' <<<"$READY_STATS") | $(jq '.p99*100|round/100' <<<"$READY_STATS") | $l50 | $b50 | $b99 | **$o50** | **$o99** | $(minus "$t50" "$l50") | $(jq .not_cold "$COLD_JSON") | $(jq .errors "$COLD_JSON") |"
	rows+=("$line")

	# The warm pool (network.warm_pool: namespaces made ahead of need) is
	# probed, so that the script also runs against versions without it.
	local pooled=
	if NET_EXTRA="warm_pool: 8" supports ""; then
		pooled="network.warm_pool: 8"
		NET_EXTRA="warm_pool: 8" write_config "$cfg" 15m "" ""
	fi
	if [[ -n $pooled ]]; then
		log "2. cold start again with a warm pool ($pooled)"
		cmd "cat cold.yaml  # the same, with $pooled"
		COLD_SETTLE=2 cold_run pool "$cfg"
		t50=$(jq .ttfb_ms.p50 "$COLD_JSON")
		t99=$(jq .ttfb_ms.p99 "$COLD_JSON")
		local p50pool
		p50pool=$(minus "$t50" "$b50")
		POOL_SUMM="| 2 | cold-start overhead p50 with $pooled (issue 3) | < 5 ms | $p50pool ms | $(verdict lt "$p50pool" 5) |"
		rows+=("| $pooled | $(jq .ttfb_ms.n "$COLD_JSON") | $t50 | $t99 | $(jq '.p50*100|round/100' <<<"$READY_STATS") | $(jq '.p99*100|round/100' <<<"$READY_STATS") | $l50 | $b50 | $b99 | **$(minus "$t50" "$b50")** | **$(minus "$t99" "$b99")** | $(minus "$t50" "$l50") | $(jq .not_cold "$COLD_JSON") | $(jq .errors "$COLD_JSON") |")
	fi

	md "## 2. Cold-start overhead"
	md ""
	md "The gateway's own share of a cold start: time to first byte of a request to a never-seen env,"
	md "minus what the same request costs a client that runs the dev server itself. Method:"
	md ""
	md "- *boot*: \`benchtool boot -get /healthz\` execs \`envgate-demo demo-server --listen 127.0.0.1:0 --data-dir DIR\`"
	md "  (the demo server's own small binary, which the gateway runs for \`{{.Self}} demo-server\`)"
	md "  $COLD_N times, one at a time; *listening* is from just before fork/exec to reading its \"listening on\""
	md "  line, *answer* to the first byte of its answer to a GET /healthz sent on a new connection as soon as"
	md "  that line was read (the server's own first request: the best a client starting it could do)."
	md "- *TTFB*: \`benchtool cold\` sends one request to each of $COLD_N distinct hosts (\`cold0.localhost\`, ...),"
	md "  one at a time, each on a new connection, and times from dial to response headers. *not cold* counts"
	md "  answers without the gateway's \`Envgate-Cold-Start\` header (it did not wait for a start)."
	md "- *env ready*: the gateway's own start time per env (its \"env ready\" log line, \`took\`: namespace +"
	md "  veth, spawn, readiness probe)."
	md "- *overhead* = TTFB − answer, at the same percentile (p50 − p50, p99 − p99): an estimate, since the"
	md "  two come from separate runs; it covers namespace and veth setup, spawn, the readiness probe, and"
	md "  proxying the request. *TTFB − listening* is the cruder estimate earlier versions of this report"
	md "  gave, which also charges the gateway with the server's handling of its first request."
	md ""
	md "| run | cold requests | TTFB p50 ms | TTFB p99 ms | env ready p50 ms | env ready p99 ms | listening p50 ms | answer p50 ms | answer p99 ms | overhead p50 ms | overhead p99 ms | TTFB − listening p50 ms | not cold | errors |"
	md "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for line in "${rows[@]}"; do md "$line"; done
	md ""
	md "| target (issue) | wanted | measured | verdict |"
	md "|---|---:|---:|---|"
	md "| cold-start overhead p50 (issue 2) | < 15 ms | $COLD_O50 ms | $(verdict lt "$COLD_O50" 15) |"
	summ "| 2 | cold-start overhead p50, TTFB − server's own boot and first answer (issue 2) | < 15 ms | $COLD_O50 ms | $(verdict lt "$COLD_O50" 15) |"
	[[ -z ${POOL_SUMM:-} ]] || summ "$POOL_SUMM"
	[[ -z ${p50pool:-} ]] || md "| cold-start overhead p50 with the warm pool (issue 3) | < 5 ms | $p50pool ms | $(verdict lt "$p50pool" 5) |"
	md "| overhead p50 / answer p50 | | $(ratio "$COLD_O50" "$b50") | |"
	md ""
	md "Where the p50 overhead goes (no warm pool): namespace, veth, spawn and readiness probe beyond the"
	md "server's own boot = env ready − listening = $(minus "$COLD_R50" "$l50") ms; the request path around the start"
	md "(accept, host parsing, admission, the first dial to the new env, proxying) = TTFB − env ready ="
	md "$(minus "$t50_nopool" "$COLD_R50") ms."
	md ""
	if [[ -z $pooled ]]; then
		md "No warm pool: this envgate does not accept \`network.warm_pool\`, so only the run without one was made."
		md ""
	fi
}

# ---- 3. thundering herds -----------------------------------------------------
scenario_herd() {
	section "3. Thundering herds"
	local cfg=$TMP/herd.yaml
	# The 200-env herd must queue whole, not be shed: the default
	# limits.max_queued_starts (4 x max_starting) answers most of it 503
	# at once, which the start-storm test covers (issue 10).
	write_config "$cfg" 15m "  max_queued_starts: 256" ""
	cmd "cat herd.yaml  # = cold.yaml, plus limits: {max_queued_starts: 256}"
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
	md "gateway's \"env ready\" log lines for those envs (singleflight: one start per env). The config sets"
	md "\`limits.max_queued_starts: 256\`, so the 200-env herd queues whole instead of being shed (the default,"
	md "4 × \`max_starting\`, answers starts past it 503 at once); starts run at most \`limits.max_starting\` (default 2 × CPUs) at a time."
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
	summ "| 3 | starts for 1,000 concurrent requests to one cold env | 1 | $starts1 | $(verdict test "$starts1" = 1) |"
	summ "| 3 | 200 cold envs at once: errors; time until all answered | 0 | $e2; $(jq .all_answered_ms "$h2") ms | $(verdict test "$e2" = 0) |"
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
	cmd "cat churn.yaml  # cold.yaml with ${limits:+limits.max_envs: 100, }idle_timeout: $idle"
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
	summ "| 4 | churn: misroutes; 5xx other than 503; leaked namespaces | 0; 0; 0 | $mis; $s5xx; $leaked | $(verdict test "$mis$s5xx$leaked" = 000) |"
	md ""
}
