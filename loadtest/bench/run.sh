#!/usr/bin/env bash
# envgate's side-by-side benchmarks (`make bench` runs this after the Go
# micro-benchmarks). As root, on a machine with at least 2 cores, it runs:
#   1. warm throughput and p99 per core: envgate vs direct vs Caddy vs nginx
#   2. cold-start overhead over many cold starts (minus the server's own boot)
#   3. thundering herds: 1,000 requests to one cold env; 200 cold envs at once
#   4. churn: zipf traffic over 2,000 env names for 60 s under an env cap
#   5. scale: cold starts, RSS, threads and start rate at 0-2,000 live envs,
#      SIGTERM time at the most, and their curves as an SVG (gonum plot)
#   6. cluster mode: warm req/s through an env's owner vs through another
#      node (one hop more), and cold starts through each (cluster.sh)
# plus a CPU profile of the warm path, and writes BENCHMARKS.md with the
# machine, the exact commands and every figure as a ratio measured in the same
# run. Every gateway it starts has its own instance (egbench), state dir and
# ports; traffic goes only to loopback and to the namespaces that gateway made.
# Beside it: lib.sh (helpers), warm.sh (scenario 1), firewall.sh (1c, its
# own knobs BENCH_FW_*), scenarios.sh (2-4),
# scale.sh (5, with its own knobs SCALE_*), and benchtool/ (a Go program for
# boot, cold, herd and growth timings, the plot, and `floor`: the start
# rate without a gateway), which it builds; cpuacct.py (by hand, not run
# here) splits the machine's CPU during a grow by process, for §5.
#
# Knobs (environment): BENCH_OUT (default BENCHMARKS.md at the repo root),
# BENCH_DURATION (s per wrk run, 5), BENCH_ROUNDS (5), BENCH_PROFILE_S (10),
# BENCH_COLD_N (100), BENCH_CHURN_S (60), BENCH_KEEP=1 keeps the temp dir
# (logs, wrk output, the CPU profile), BENCH_ONLY (scenarios to run, e.g.
# "warm cold"; default all: warm firewall cold herd churn scale cluster, where
# firewall is §1c, the env firewall's cost on the warm path and on a cold
# start), BENCH_REV (the
# envgate revision the report names; default from git).
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
# The trampoline dev servers start through: without it beside $BIN every
# such start re-executes the gateway's binary, and the figures are not
# what an installed gateway gets.
[[ -x $(dirname "$BIN")/envgate-init ]] || die "$(dirname "$BIN")/envgate-init missing: run make build"
# Likewise the demo dev server's own binary, which "{{.Self}} demo-server"
# runs when it sits beside $BIN.
DEMO_BIN=$(dirname "$BIN")/envgate-demo
[[ -x $DEMO_BIN ]] || die "$DEMO_BIN missing: run make build"

# ---- tools -----------------------------------------------------------------
ONLY=${BENCH_ONLY:-warm firewall cold herd churn scale cluster}
install_tools() {
	local need=()
	if [[ " $ONLY " == *" warm "* || " $ONLY " == *" firewall "* || " $ONLY " == *" cluster "* ]]; then
		command -v wrk >/dev/null || need+=(wrk)
	fi
	if [[ " $ONLY " == *" warm "* ]]; then # only the warm comparison uses these
		command -v caddy >/dev/null || need+=(caddy)
		command -v nginx >/dev/null || need+=(nginx-light)
	fi
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
# Functions the scenarios add, run at exit after their processes stopped.
CLEANUP_HOOKS=()
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
	for h in "${CLEANUP_HOOKS[@]}"; do "$h"; done
	[[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "building benchtool"
"$GO" build -o "$TMP/benchtool" ./loadtest/bench/benchtool
BT=$TMP/benchtool

# Helpers and scenarios live beside this file.
HERE=$ROOT/loadtest/bench
# shellcheck source=loadtest/bench/lib.sh
. "$HERE/lib.sh"
# shellcheck source=loadtest/bench/warm.sh
. "$HERE/warm.sh"
# shellcheck source=loadtest/bench/firewall.sh
. "$HERE/firewall.sh"
# shellcheck source=loadtest/bench/scenarios.sh
. "$HERE/scenarios.sh"
# shellcheck source=loadtest/bench/scale.sh
. "$HERE/scale.sh"
# shellcheck source=loadtest/bench/cluster.sh
. "$HERE/cluster.sh"

# Run state: the Commands section, the report's parts, what to clean up.
CMDS=$TMP/commands.md MD=$TMP/results.md SUM=$TMP/summary.md
: >"$CMDS"
: >"$MD"
: >"$SUM"
CONF_FILES=() GW_PID='' GW_LOG='' LEAKS=0
TICK=$(getconf CLK_TCK)
write_config "$TMP/gc.yaml" 15m "" ""

# ---- run -----------------------------------------------------------------------
REV=${BENCH_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
[[ -n ${BENCH_REV:-} ]] || git diff --quiet HEAD 2>/dev/null || REV="$REV (with uncommitted changes)"
log "tmp dir $TMP"
BUSY_BEFORE=$(busy_pct 2)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "CPU busy before the run (2 s, nothing of ours running): $BUSY_BEFORE %"
for s in warm firewall cold herd churn scale cluster; do
	[[ " $ONLY " != *" $s "* ]] || "scenario_$s"
done
BUSY_AFTER=$(busy_pct 2)

# ---- BENCHMARKS.md -------------------------------------------------------------
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
{
	echo "# envgate benchmarks"
	echo ""
	echo "Written by \`make bench\` (\`loadtest/bench/run.sh\`) on $(date -u '+%Y-%m-%d %H:%M UTC'), envgate $REV."
	echo "Every comparison is a ratio of figures measured side by side in this one run, on this machine;"
	echo "absolute numbers move with the machine, the ratios much less. Regenerate with \`sudo make bench\`."
	echo ""
	echo "## Machine"
	echo ""
	echo "| | |"
	echo "|---|---|"
	echo "| cores (nproc) | $(nproc) |"
	echo "| CPU | ${cpu_model:-unknown} |"
	echo "| memory | $(free -g | awk '/^Mem:/ { print $2 " GiB" }') |"
	echo "| kernel | $(uname -sr) |"
	echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |"
	echo "| Go | $("$GO" version | sed 's/^go version //') |"
	if command -v wrk >/dev/null; then echo "| wrk | $(wrk -v 2>&1 | head -1 | sed 's/ Copyright.*//') |"; fi
	if command -v caddy >/dev/null; then echo "| Caddy | $(caddy version 2>/dev/null | head -1) |"; fi
	if command -v nginx >/dev/null; then echo "| nginx | $(nginx -v 2>&1 | sed 's/^nginx version: //') |"; fi
	echo "| curl | $(curl --version | head -1 | cut -d' ' -f1-2) |"
	echo "| CPU busy with other work, 2 s before / after the run | $BUSY_BEFORE % / $BUSY_AFTER % (load average before: $LOAD_BEFORE) |"
	echo ""
	if ((BUSY_BEFORE > 10 || BUSY_AFTER > 10)); then
		echo "**Noisy machine**: other processes used the CPUs around this run (see the row above), so"
		echo "absolute figures are low and the per-round ranges wide; the medians of interleaved rounds are the"
		echo "figures to trust. Rerun on an idle machine for publishable numbers."
		echo ""
	fi
	echo "## Summary"
	echo ""
	echo "| § | what | wanted | measured | verdict |"
	echo "|---|---|---:|---:|---|"
	cat "$SUM"
	echo ""
	cat "$MD"
	echo "## Commands"
	echo ""
	echo "As run by the script, in order (config files are written into a temp dir; \`benchtool\` is"
	echo "\`loadtest/bench/benchtool\`, built by the script):"
	echo ""
	echo '```sh'
	cat "$CMDS"
	echo '```'
	echo ""
	if ((${#CONF_FILES[@]})); then
		echo "The warm run's files (the other scenarios' configs differ only as noted above; TMP is the"
		echo "script's temp dir):"
	else
		echo "The scenarios' configs are \`write_config\` in \`loadtest/bench/lib.sh\` with the additions noted"
		echo "above (the warm scenario, not run this time, prints its files here)."
	fi
	for f in "${CONF_FILES[@]}"; do
		echo ""
		echo "\`$(basename "$f")\`:"
		echo ""
		echo '```'
		sed "s#$TMP#TMP#g" "$f"
		echo '```'
	done
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
((LEAKS == 0)) || die "$LEAKS namespaces/links leaked (see above)"
log "done in ${SECONDS}s: $OUT"
