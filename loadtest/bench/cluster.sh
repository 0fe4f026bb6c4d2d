# shellcheck shell=bash
# Scenario 6 of loadtest/bench/run.sh: cluster mode (issue 16, test 6).
# Two gateways (nodes a and b, instances egbcla and egbclb, a pool half
# each, one shared state dir) on a one-member etcd (`benchtool etcd`, the
# server envgate's tests embed). Node b holds one env and has
# limits.max_envs: 1, so it has no room and every other env is placed on
# node a: a request to b for them takes the extra hop. Side by side:
#   - warm req/s and latency of one env through its owner (a) and through
#     the other node (b), rounds alternating which goes first;
#   - cold starts, one at a time, through the owner and through the other
#     node (each a fresh env started on a).
# Sourced by run.sh, which sets the variables these use (TMP, BIN, BT,
# DUR, ROUNDS, COLD_N, GW_PORT).

CL_ETCD_CLIENT=http://127.0.0.1:18490 CL_ETCD_PEER=http://127.0.0.1:18491
CL_PORT_A=$GW_PORT CL_PORT_B=$((GW_PORT + 20))

# cluster_config FILE NODE INSTANCE POOL PORT MAX_ENVS
cluster_config() {
	local file=$1 node=$2 instance=$3 pool=$4 port=$5 max=$6
	cat >"$file" <<-YAML
		instance: $instance
		domains: [localhost]
		listen: {http: "127.0.0.1:$port"}
		state_dir: $TMP/cstate
		tls: {mode: "off"}
		network: {pool: $pool}
		limits: {max_envs: $max}
		cluster:
		  etcd: {endpoints: ["$CL_ETCD_CLIENT"]}
		  name: bench
		  node: $node
		  advertise: "127.0.0.1:$port"
		  session_ttl: 6s
		  secret_file: $TMP/cluster-secret
		templates:
		  - name: demo
		    match: "*"
		    command: ["{{.Self}}", "demo-server", "--listen", ":{{.Port}}", "--name", "{{.Name}}", "--data-dir", "{{.DataDir}}"]
		    port: 3000
		    allow_root: true
		    ready: {http: /healthz, timeout: 30s}
		    idle_timeout: 15m
	YAML
	"$BIN" --config "$file" config --check >/dev/null || die "config $file rejected"
}

# cluster_node NAME CONFIG PORT: starts a node, waits until it has joined;
# sets CL_PID.
cluster_node() {
	local name=$1 cfg=$2 port=$3 log=$TMP/gateway-cluster-$1.log
	cmd "bin/envgate --config $(basename "$cfg") --log-format json serve 2>gateway-cluster-$name.log &"
	"$BIN" --config "$cfg" --log-format json serve 2>"$log" &
	CL_PID=$!
	PIDS+=("$CL_PID")
	wait_port 127.0.0.1 "$port"
	for _ in $(seq 300); do
		grep -q '"cluster member registered"' "$log" && return 0
		sleep 0.1
	done
	die "node $name did not join the cluster: $(tail -3 "$log")"
}

# cluster_ready NODE ENV: whether node's log says env got ready there.
cluster_ready() { jq -e --arg e "$2" 'select(.message=="env ready" and .env==$e)' "$TMP/gateway-cluster-$1.log" >/dev/null 2>&1; }

scenario_cluster() {
	section "6. Cluster mode"
	log "6. cluster: etcd and two nodes"
	cmd "benchtool etcd -dir TMP/etcd -client $CL_ETCD_CLIENT -peer $CL_ETCD_PEER &"
	"$BT" etcd -dir "$TMP/etcd" -client "$CL_ETCD_CLIENT" -peer "$CL_ETCD_PEER" >"$TMP/etcd.out" 2>&1 &
	local etcd=$!
	PIDS+=("$etcd")
	for _ in $(seq 600); do grep -q '^ready' "$TMP/etcd.out" && break; sleep 0.1; done
	grep -q '^ready' "$TMP/etcd.out" || die "etcd did not start: $(tail -3 "$TMP/etcd.out")"
	head -c 32 /dev/urandom | base64 >"$TMP/cluster-secret"
	chmod 600 "$TMP/cluster-secret"
	cluster_config "$TMP/cluster-a.yaml" gw-a egbcla 10.215.0.0/17 "$CL_PORT_A" 1000
	cluster_config "$TMP/cluster-b.yaml" gw-b egbclb 10.215.128.0/17 "$CL_PORT_B" 1
	cmd "cat cluster-a.yaml  # node a: instance egbcla, pool 10.215.0.0/17, limits.max_envs: 1000; cluster: {etcd: [$CL_ETCD_CLIENT], name: bench, node: gw-a, advertise: 127.0.0.1:$CL_PORT_A, session_ttl: 6s, secret_file}"
	cmd "cat cluster-b.yaml  # node b: the same with instance egbclb, pool 10.215.128.0/17, port $CL_PORT_B, node gw-b, limits.max_envs: 1"
	cluster_node a "$TMP/cluster-a.yaml" "$CL_PORT_A"
	local pa=$CL_PID
	cluster_node b "$TMP/cluster-b.yaml" "$CL_PORT_B"
	local pb=$CL_PID

	# Fill node b: names through b until one starts there.
	local i pin=
	for i in $(seq 0 40); do
		curl -s -o /dev/null -H "Host: pin$i.localhost" "http://127.0.0.1:$CL_PORT_B/"
		if cluster_ready b "pin$i"; then pin=pin$i; break; fi
	done
	[[ -n $pin ]] || die "no env landed on node b"
	cmd "curl -H 'Host: pinN.localhost' http://127.0.0.1:$CL_PORT_B/  # until one starts on b ($pin), which fills it (max_envs: 1)"
	# b publishes its count every session_ttl/3 (2 s): wait for two.
	sleep 5
	curl -s -o /dev/null -H "Host: $HOSTHDR" "http://127.0.0.1:$CL_PORT_A/"
	cluster_ready a "${HOSTHDR%%.*}" || die "${HOSTHDR%%.*} did not start on node a"

	log "6. cluster: warm, through the owner and through the other node ($ROUNDS rounds)"
	local r own=() hop=() own99=() hop99=() res
	for r in $(seq "$ROUNDS"); do
		# Odd rounds run through the owner first, even ones through b.
		local order=(owner hop) which
		((r % 2)) || order=(hop owner)
		for which in "${order[@]}"; do
			if [[ $which == owner ]]; then
				res=$(wrk_run "cl-owner-$r" "http://127.0.0.1:$CL_PORT_A/" "$pa")
				own+=("$(cut -d' ' -f1 <<<"$res")") own99+=("$(cut -d' ' -f3 <<<"$res")")
			else
				res=$(wrk_run "cl-hop-$r" "http://127.0.0.1:$CL_PORT_B/" "$pb")
				hop+=("$(cut -d' ' -f1 <<<"$res")") hop99+=("$(cut -d' ' -f3 <<<"$res")")
			fi
			[[ $(cut -d' ' -f4,5 <<<"$res") == "0 0" ]] || die "warm run with errors: $res"
		done
	done
	local o50 h50 ratio
	o50=$(median "${own[@]}")
	h50=$(median "${hop[@]}")
	ratio=$(ratio "$h50" "$o50")

	log "6. cluster: $COLD_N cold starts through each node, one at a time"
	local ca=$TMP/cold-cl-a.json cb=$TMP/cold-cl-b.json
	cmd "benchtool cold -addr 127.0.0.1:$CL_PORT_A -hosts 'cla{{.I}}.localhost' -n $COLD_N -path /healthz  # through the owner"
	"$BT" cold -addr "127.0.0.1:$CL_PORT_A" -hosts 'cla{{.I}}.localhost' -n "$COLD_N" -path /healthz >"$ca"
	cmd "benchtool cold -addr 127.0.0.1:$CL_PORT_B -hosts 'clb{{.I}}.localhost' -n $COLD_N -path /healthz  # through the other node (placed on a)"
	"$BT" cold -addr "127.0.0.1:$CL_PORT_B" -hosts 'clb{{.I}}.localhost' -n "$COLD_N" -path /healthz >"$cb"
	local onb
	onb=$(jq -r 'select(.message=="env ready") | .env | select(startswith("cl"))' "$TMP/gateway-cluster-b.log" | wc -l)

	local p
	for p in "$pb" "$pa"; do stop_proc "$p"; done
	stop_proc "$etcd"
	local left
	left=$(ip netns list | grep -c "^egbcl[ab]-" || true)
	if ((left)); then
		log "LEAK: $left namespaces of the cluster nodes left"
		LEAKS=$((LEAKS + left))
	fi

	md "## 6. Cluster mode"
	md ""
	md "Two nodes on one etcd (\`benchtool etcd\`: the embedded server of the tests), one state dir. Node b"
	md "runs one env and has \`limits.max_envs: 1\`, so every other env is placed on node a; a request to b"
	md "for one of them is forwarded to a (a signed hop over a kept-alive connection). Both nodes and the"
	md "env share the machine's cores with wrk (on CPU 0), so the hop's cost shows as CPU as well as latency."
	md ""
	md "| warm, one env on node a | req/s (median of $ROUNDS) | per-round req/s | p99 ms (median) |"
	md "|---|---:|---|---:|"
	md "| through node a (the owner) | $o50 | ${own[*]} | $(median "${own99[@]}") |"
	md "| through node b (one hop more) | $h50 | ${hop[*]} | $(median "${hop99[@]}") |"
	md ""
	md "Through the other node / through the owner: **$ratio** (per round $(ratio_range "${hop[*]}" "${own[*]}"))."
	md ""
	md "| $COLD_N cold starts, one at a time | TTFB p50 ms | p99 ms | errors | started on b |"
	md "|---|---:|---:|---:|---:|"
	md "| through node a (the owner) | $(jq .ttfb_ms.p50 "$ca") | $(jq .ttfb_ms.p99 "$ca") | $(jq .errors "$ca") | |"
	md "| through node b (placed on a, forwarded) | $(jq .ttfb_ms.p50 "$cb") | $(jq .ttfb_ms.p99 "$cb") | $(jq .errors "$cb") | $onb |"
	md ""
	summ "| 6 | cluster: warm req/s through another node / through the owner | | $ratio | |"
	summ "| 6 | cluster: cold start p50 through the owner; through another node | | $(jq .ttfb_ms.p50 "$ca") ms; $(jq .ttfb_ms.p50 "$cb") ms | |"
}
