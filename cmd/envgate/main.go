// Command envgate is a reverse-proxy gateway with on-demand development
// environments: a request for <env>.<domain> starts env's dev server in a
// network namespace of its own, waits until it answers, and proxies to it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func main() {
	// Started as a dev server's trampoline (without envgate-init beside
	// this binary): do its work and become the dev server, before
	// anything of the gateway's runs.
	if devserver.IsTrampoline() {
		devserver.RunTrampoline()
	}
	// The gateway's live heap is small (pooled buffers, a few structs per
	// connection), so collecting at 5x it instead of 2x costs megabytes and
	// saves about 5% CPU per proxied request (BENCHMARKS.md). GOGC set in
	// the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
		// With many envs the live heap is not small (about 20 KiB each:
		// the env, its process, loggers, pipes, buffers), and 5x it grew
		// RSS to about 150 MiB at 1,000 envs, mostly garbage. A soft
		// limit makes the GC collect earlier once the heap nears it; GOGC
		// still rules below it. Past it the runtime caps the GC's CPU, so
		// an env count whose live heap nears the limit costs GC CPU
		// rather than memory. GOMEMLIMIT in the environment wins.
		if os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(128 << 20)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "envgate:", err)
		os.Exit(1)
	}
}

type globalFlags struct {
	config    string
	logFormat string
	logLevel  string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "envgate",
		Short: "Reverse-proxy gateway with on-demand development environments",
		Long: `envgate routes <env>.<domain> to env's dev server, starting it on first use in
a Linux network namespace of its own (veth pair to the host) and stopping it
when idle. With no --config it serves the embedded default: <env>.localhost on
http://localhost:8080, each env running the built-in demo dev server.

Try:  sudo envgate serve   then   curl http://feature-x.localhost:8080/`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "", "YAML config file (default: the embedded default; see 'envgate config')")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "auto", "log format: json, console, or auto (console when stderr is a terminal)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug (every request), info, warn, error")
	root.AddCommand(
		newServeCmd(g),
		newGCCmd(g),
		newDemoCmd(),
		newConfigCmd(g),
		newTrustCmd(g),
		newLoadtestCmd(),
		newShareCmd(g),
		newURLCmd(g),
		newVersionCmd(),
		newLsCmd(g),
		newStatusCmd(g),
		newEnvActionCmd(g, "stop", "Stop an env's dev server and remove its namespace (its data stays)"),
		newEnvActionCmd(g, "restart", "Stop an env if it runs and start it again; waits until it is ready"),
		newEnvActionCmd(g, "destroy", "Stop an env and remove its data dir and log files"),
		newLogsCmd(g),
	)
	return root
}

// logger builds the process logger from the global flags.
func (g *globalFlags) logger() (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(g.logLevel)
	if err != nil || g.logLevel == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	var w io.Writer = os.Stderr
	switch g.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}
	case "auto":
		if term.IsTerminal(int(os.Stderr.Fd())) {
			w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want json, console or auto", g.logFormat)
	}
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// requireRoot explains, rather than failing deep inside netlink, that
// namespaces need privileges.
func requireRoot(what string) error {
	if os.Geteuid() != 0 {
		return errors.New(what + " needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to manage network namespaces; run it with sudo")
	}
	return nil
}
