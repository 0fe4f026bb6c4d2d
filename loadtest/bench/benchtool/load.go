package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/envgate/envgate/loadtest"
)

// runLoad runs the loadtest package in a closed loop, with the meaning and
// the JSON report of `envgate loadtest --concurrency`; the script uses it
// only when that command cannot run (see run.sh).
func runLoad(args []string) (*loadtest.Report, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var o loadtest.Options
	fs.StringVar(&o.Addr, "addr", "", "HOST:PORT to dial for every request")
	fs.StringVar(&o.HostTemplate, "hosts", loadtest.DefaultHostTemplate, "hostname template over {{.I}}")
	fs.IntVar(&o.Envs, "envs", loadtest.DefaultEnvs, "number of hostnames")
	fs.StringVar(&o.Dist, "dist", "uniform", "uniform, zipf:S or hotcold:H,P")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "closed-loop workers")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured duration")
	fs.StringVar(&o.Path, "path", loadtest.DefaultPath, "request path")
	fs.DurationVar(&o.Timeout, "timeout", loadtest.DefaultTimeout, "per-request timeout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.Addr == "" {
		return nil, errors.New("load: -addr is required")
	}
	return loadtest.Run(context.Background(), o, nil)
}

// printReport writes r as `envgate loadtest --json` does.
func printReport(r *loadtest.Report) error { return r.WriteJSON(os.Stdout) }
