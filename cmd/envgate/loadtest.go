package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/envgate/envgate/loadtest"
)

// newLoadtestCmd is `envgate loadtest`: flags become loadtest.Options, and
// the package does the rest. Its flags are a contract shared with the docs
// and the benchmark scripts.
func newLoadtestCmd() *cobra.Command {
	var (
		o        loadtest.Options
		headers  []string
		body     string
		bodyFile string
		hostList string
		asJSON   bool
		compare  bool
	)
	cmd := &cobra.Command{
		Use:   "loadtest --addr HOST:PORT (--rate R | --concurrency C) [flags]\n  envgate loadtest --compare A.json B.json",
		Short: "Load any hostname-routing HTTP(S) server, such as the gateway, and report latency and misroutes",
		Long: `Sends requests to env hostnames over connections to one address (no DNS),
and reports latency percentiles (overall, cold, warm), throughput, and errors by
class, counting responses that name the wrong env as misroutes.

--rate R runs an open loop: requests are scheduled at R per second and latency
counts from each request's scheduled time, so a server stall shows in full.
--concurrency C runs a closed loop of C workers.

--compare A B prints the metrics of two --json reports side by side with B/A.`,
		Example: `  envgate loadtest --addr 127.0.0.1:8080 --hosts 'e{{.I}}.localhost' --envs 50 --rate 500 --duration 30s
  envgate loadtest --addr 10.0.0.1:443 --scheme https --http2 --hosts 'e{{.I}}.dev.example.com' \
      --envs 200 --concurrency 64 --requests 100000 --dist zipf:1.1 --json > after.json
  envgate loadtest --compare before.json after.json`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case compare && len(args) != 2:
				return errors.New("loadtest: --compare takes two report files: --compare A.json B.json")
			case !compare && len(args) != 0:
				return fmt.Errorf("loadtest: unexpected arguments %q (did you mean --compare?)", args)
			}
			return nil
		},
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if compare {
				return runCompare(out, args[0], args[1])
			}
			var err error
			if o.Header, err = loadtest.ParseHeaders(headers); err != nil {
				return err
			}
			if hostList != "" {
				if o.HostList, err = loadtest.ReadHostList(hostList); err != nil {
					return err
				}
			}
			switch {
			case body != "" && bodyFile != "":
				return errors.New("loadtest: --body and --body-file exclude each other")
			case body != "":
				o.Body = []byte(body)
			case bodyFile != "":
				if o.Body, err = os.ReadFile(bodyFile); err != nil {
					return fmt.Errorf("loadtest: --body-file: %w", err)
				}
			}

			ctx, stop := signal.NotifyContext(commandContext(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var progress io.Writer
			if term.IsTerminal(int(os.Stderr.Fd())) {
				progress = os.Stderr
			}
			rep, err := loadtest.Run(ctx, o, progress)
			if err != nil {
				return err
			}
			if asJSON {
				return rep.WriteJSON(out)
			}
			rep.WriteTable(out)
			return nil
		},
	}

	f := cmd.Flags()
	f.StringVar(&o.Addr, "addr", "", "`HOST:PORT` every connection dials, whatever the hostname (required)")
	f.StringVar(&o.Scheme, "scheme", loadtest.DefaultScheme, "http or https")
	f.StringVar(&o.HostTemplate, "hosts", loadtest.DefaultHostTemplate, "hostname `TEMPLATE` over {{.I}} = 0..envs-1")
	f.IntVar(&o.Envs, "envs", loadtest.DefaultEnvs, "how many hostnames --hosts makes")
	f.StringVar(&hostList, "host-list", "", "`FILE` of hostnames, one per line (instead of --hosts)")
	f.StringVar(&o.Dist, "dist", "uniform", "host distribution: uniform, zipf:S (S > 1), or hotcold:H,P (H hot hosts, fraction P to never-seen hosts)")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the host choice")

	f.Float64Var(&o.Rate, "rate", 0, "open loop: requests per second, latency measured from the schedule")
	f.IntVar(&o.Concurrency, "concurrency", 0, "closed loop: number of workers")
	f.DurationVarP(&o.Duration, "duration", "d", 0, "measured duration (default 10s unless --requests)")
	f.Int64VarP(&o.Requests, "requests", "n", 0, "stop after this many measured requests")
	f.DurationVar(&o.Warmup, "warmup", 0, "warm-up before measuring, excluded from the report")
	f.IntVar(&o.MaxInflight, "max-inflight", loadtest.DefaultMaxInflight, "open loop: cap on requests in flight")
	f.DurationVar(&o.Timeout, "timeout", loadtest.DefaultTimeout, "per-request timeout, body included")

	f.StringVarP(&o.Method, "method", "X", loadtest.DefaultMethod, "request method")
	f.StringVar(&o.Path, "path", loadtest.DefaultPath, "request path and query")
	f.StringArrayVarP(&headers, "header", "H", nil, "request header \"Name: value\" (repeatable)")
	f.StringVar(&body, "body", "", "request body")
	f.StringVar(&bodyFile, "body-file", "", "request body from `FILE`")

	f.StringVar(&o.ExpectHeader, "expect-header", loadtest.DefaultExpectHeader, "response header that must equal the env name (the hostname's first label)")
	f.StringVar(&o.ExpectBody, "expect-body", "", "instead, the body must contain this `TEMPLATE` over {{.Env}} and {{.Host}}")
	f.BoolVar(&o.NoCheck, "no-check", false, "do not check which env answered")

	f.StringVar(&o.CAFile, "ca", "", "PEM `FILE` of CA certificates to trust instead of the system's")
	f.BoolVar(&o.Insecure, "insecure", false, "do not verify server certificates")
	f.BoolVar(&o.HTTP2, "http2", false, "force HTTP/2 (h2 over TLS, h2c over http)")

	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&compare, "compare", false, "compare two --json reports: --compare A.json B.json")
	cmd.MarkFlagsMutuallyExclusive("rate", "concurrency")
	cmd.MarkFlagsMutuallyExclusive("duration", "requests")
	return cmd
}

func runCompare(w io.Writer, aPath, bPath string) error {
	a, err := loadtest.LoadReport(aPath)
	if err != nil {
		return err
	}
	b, err := loadtest.LoadReport(bPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "a = %s\nb = %s\n\n", aPath, bPath)
	loadtest.Compare(a, b, w)
	return nil
}

// commandContext is the command's context, or Background when it runs
// without one (as in tests that call Execute on the command alone).
func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
