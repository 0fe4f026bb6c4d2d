package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/spf13/cobra"
)

// adminClient finds the running gateway's admin socket through --config.
func (g *globalFlags) adminClient() (*admin.Client, error) {
	cfg, err := LoadConfig(g.config)
	if err != nil {
		return nil, err
	}
	return &admin.Client{Socket: cfg.Admin.Socket}, nil
}

// completeEnvs completes env names from the running gateway's list.
func completeEnvs(g *globalFlags) func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := g.adminClient()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var envs []admin.Env
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		if c.JSON(ctx, "GET", "/v1/envs", &envs) != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, e := range envs {
			out = append(out, cobra.CompletionWithDesc(e.Name, e.State))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func newLsCmd(g *globalFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the envs the running gateway knows of",
		Long: `List the envs the running gateway knows of (those that ran since it started
and were not forgotten while idle), through its admin socket (admin.socket,
found through --config). -o json prints the API's JSON (see README.md).
In cluster mode it lists the envs of every live node, with a NODE column;
stop, restart, destroy and logs act on the node that owns the env.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			var envs []admin.Env
			if err := c.JSON(cmd.Context(), "GET", "/v1/envs", &envs); err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), envs)
			case "table", "":
			default:
				return fmt.Errorf("-o %q: want table or json", output)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			// In cluster mode, the list is every node's: say whose.
			clustered := slices.ContainsFunc(envs, func(e admin.Env) bool { return e.Node != "" })
			if clustered {
				fmt.Fprint(tw, "NODE\t")
			}
			fmt.Fprintln(tw, "NAME\tSTATE\tTEMPLATE\tADDR\tPID\tAGE\tIDLE\tREQUESTS\tIN FLIGHT\tMEMORY\tLAST START\tLAST ERROR")
			now := time.Now()
			for _, e := range envs {
				if clustered {
					fmt.Fprintf(tw, "%s\t", dash(e.Node))
				}
				age := "-"
				if e.ReadyAt != nil && e.State == "ready" {
					age = shortDuration(now.Sub(*e.ReadyAt))
				}
				idle := "-"
				if e.State == "ready" && e.InFlight == 0 {
					idle = shortDuration(time.Duration(e.IdleSeconds * float64(time.Second)))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", e.Name, e.State, e.Template, dash(e.Addr),
					dash(strconv.Itoa(e.Pid)), age, idle, e.Requests, e.InFlight, bytesString(e.MemoryBytes),
					secondsString(e.LastStartSeconds), dash(e.LastError))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running gateway's version, uptime, limits and env counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			var s admin.Status
			if err := c.JSON(cmd.Context(), "GET", "/v1/status", &s); err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), s)
			}
			w := cmd.OutOrStdout()
			rev := s.Revision
			if rev == "" {
				rev = "unknown"
			}
			fmt.Fprintf(w, "envgate %s (commit %s), instance %s, pid %d\n", s.Version, rev, s.Instance, s.Pid)
			fmt.Fprintf(w, "up %s (since %s)\n", shortDuration(time.Duration(s.UptimeSeconds*float64(time.Second))), s.Started.Local().Format(time.DateTime))
			var states []string
			for _, st := range []string{"ready", "starting", "stopping", "failed", "stopped"} {
				if n := s.ByState[st]; n > 0 {
					states = append(states, fmt.Sprintf("%d %s", n, st))
				}
			}
			fmt.Fprintf(w, "envs: %d known (%s), %d requests in flight\n", s.Envs, dash(strings.Join(states, ", ")), s.InFlight)
			maxEnvs := "unlimited"
			if s.Limits.MaxEnvs > 0 {
				maxEnvs = strconv.Itoa(s.Limits.MaxEnvs)
			}
			fmt.Fprintf(w, "limits: max_envs %s, max_starting %d, max_queued_starts %d, min_available_memory %s\n",
				maxEnvs, s.Limits.MaxStarting, s.Limits.MaxQueuedStarts, bytesString(s.Limits.MinAvailableMemory))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// newEnvActionCmd makes envgate stop|restart|destroy <env>.
func newEnvActionCmd(g *globalFlags, action, short string) *cobra.Command {
	return &cobra.Command{
		Use:               action + " <env>",
		Short:             short,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeEnvs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			name := args[0]
			w := cmd.OutOrStdout()
			switch action {
			case "restart":
				var e admin.Env
				if err := c.JSON(cmd.Context(), "POST", admin.EnvPath(name, "/restart"), &e); err != nil {
					return err
				}
				fmt.Fprintf(w, "%s restarted: pid %d, ready in %s\n", name, e.Pid, secondsString(e.LastStartSeconds))
			default:
				var r admin.ActionResult
				if err := c.JSON(cmd.Context(), "POST", admin.EnvPath(name, "/"+action), &r); err != nil {
					return err
				}
				switch {
				case action == "stop" && !r.Changed:
					fmt.Fprintf(w, "%s was not running\n", name)
				case action == "stop":
					fmt.Fprintf(w, "%s stopped\n", name)
				default:
					fmt.Fprintf(w, "%s destroyed: stopped, data dir and logs removed\n", name)
				}
			}
			return nil
		},
	}
}

func newLogsCmd(g *globalFlags) *cobra.Command {
	var (
		follow bool
		since  time.Duration
		tail   int
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--since 10m] <env>",
		Short: "Print an env's dev server output (stdout and stderr), kept in state_dir/logs",
		Long: `Print an env's dev server output (stdout and stderr together), each line
prefixed with its time in UTC. The gateway keeps it in state_dir/logs/<env>.log
across restarts of the env and of the gateway, rotated by size (logs: in the
config); destroy removes it. -f keeps printing new lines until interrupted.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeEnvs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			q := url.Values{}
			if follow {
				q.Set("follow", "1")
			}
			if since > 0 {
				q.Set("since", since.String())
			}
			if tail > 0 {
				q.Set("tail", strconv.Itoa(tail))
			}
			resp, err := c.Do(cmd.Context(), "GET", admin.EnvPath(args[0], "/logs?"+q.Encode()))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(cmd.OutOrStdout(), resp.Body)
			if cmd.Context().Err() != nil {
				return nil // interrupted: the normal end of -f
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().DurationVar(&since, "since", 0, "only lines newer than this (e.g. 10m)")
	cmd.Flags().IntVarP(&tail, "tail", "n", 0, "only the last N lines (default: all of the current file)")
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" || s == "0" {
		return "-"
	}
	return s
}

func shortDuration(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func secondsString(s float64) string {
	if s <= 0 {
		return "-"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func bytesString(n int64) string {
	switch {
	case n < 0:
		return "-"
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0fKiB", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10) + "B"
}
