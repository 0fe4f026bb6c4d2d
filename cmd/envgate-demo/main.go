// Command envgate-demo is envgate's demo dev server (package
// loadtest/demo) in a binary of its own: `envgate demo-server` without
// the gateway. A template command "{{.Self}} demo-server ARGS" runs
// "envgate-demo demo-server ARGS" when this binary sits beside the envgate
// binary (make build puts both in bin/).
//
// Why a binary of its own: the demo server boots at every env start, and
// the envgate binary's runtime start and package initialisation (grpc,
// etcd, certmagic, prometheus, ...) cost about 5 ms of CPU before its main
// runs; this binary imports the demo server, net/http and the standard
// library only.
//
// It takes the flags of `envgate demo-server`, after an optional first
// argument "demo-server" (so that the gateway swaps only the program of
// such a command, and the processes keep their familiar command line).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/envgate/envgate/loadtest/demo"
)

func main() {
	o := demo.Options{Log: os.Stderr}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "demo-server" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("envgate-demo", flag.ContinueOnError)
	o.Flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage:\n  envgate-demo [demo-server] [flags]\n\nFlags:\n", demo.Description)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "envgate-demo: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "envgate-demo:", err)
		os.Exit(1)
	}
}
