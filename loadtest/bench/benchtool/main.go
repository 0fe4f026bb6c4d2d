// Command benchtool holds the measurements of loadtest/bench/run.sh that
// neither wrk nor `envgate loadtest` makes: a dev server's own boot time,
// the time to first byte of one cold request at a time, a herd of
// requests released at once, the rate of starts that grow the set of live
// envs, and the scale scenario's curves drawn as an SVG (gonum plot). Each
// subcommand prints one JSON object on stdout, latencies in milliseconds,
// for the script to put in BENCHMARKS.md; etcd runs the etcd of the
// cluster scenario.
//
// It only dials the address it is given (loopback, where the gateway
// listens) and never resolves a hostname: the env's name travels in the
// Host header alone.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/envgate/envgate/loadtest"
)

const usage = `usage:
  benchtool boot -n N -- COMMAND [ARGS...]   exec -> "listening on" line, N times
  benchtool cold -addr HOST:PORT -hosts TEMPLATE -n N [-path P]
  benchtool herd -addr HOST:PORT -hosts TEMPLATE -envs E -n N [-path P]
  benchtool grow -addr HOST:PORT -hosts TEMPLATE -envs E -concurrency C [-path P]
                 (each of E hosts once, C at a time: the sustained start rate)
  benchtool floor [-steps 500,1000,2000] [-concurrency C] [-pool P] -- COMMAND [ARGS...]
                 (root: the start rate of bare kernel operations and COMMAND's boot, no
                 gateway: new netns, veth, addresses, pid and mount namespace, fork/exec)
  benchtool plot -in scale.csv -out scale.svg [-title T]
  benchtool etcd -dir D [-client URL] [-peer URL]
                 (a one-member etcd on loopback until SIGTERM, for the cluster scenario)
  benchtool load -addr HOST:PORT -hosts TEMPLATE -envs E -dist D -concurrency C -duration D
                 (envgate loadtest --concurrency C --json, for when that command cannot run)
  benchtool coldquads [-quads N] [-per K] [-pairing alternate|concurrent] [-hosts T] MODE=NETNS,ADDR ...
                 (root: §1c's cold starts from one process, dialing each gateway in its own
                 network namespace: per mode, per quad, the mean of its two slots' TTFB p50)
  benchtool paired [-diff] < PAIRS
                 (pairs "a b", one per line: median, quartiles and a 95 % bootstrap
                 interval of the median of (b/a − 1) in %, or of b − a with -diff)`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var (
		out any
		err error
	)
	switch os.Args[1] {
	case "boot":
		out, err = runBoot(os.Args[2:])
	case "cold":
		out, err = runCold(os.Args[2:])
	case "herd":
		out, err = runHerd(os.Args[2:])
	case "grow":
		out, err = runGrow(os.Args[2:])
	case "floor":
		out, err = runFloor(os.Args[2:])
	case "plot":
		out, err = runPlot(os.Args[2:])
	case "coldquads":
		out, err = runColdQuads(os.Args[2:])
	case "paired":
		out, err = runPaired(os.Args[2:])
	case "etcd":
		if err := runEtcd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "benchtool:", err)
			os.Exit(1)
		}
		return
	case "load":
		var r *loadtest.Report
		if r, err = runLoad(os.Args[2:]); err == nil {
			err = printReport(r)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchtool:", err)
			os.Exit(1)
		}
		return
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}
