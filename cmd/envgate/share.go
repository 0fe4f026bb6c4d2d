package main

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/spf13/cobra"
)

// maxShare bounds how long a share link may be valid.
const maxShare = 90 * 24 * time.Hour

func newShareCmd(g *globalFlags) *cobra.Command {
	var (
		valid  time.Duration
		domain string
	)
	cmd := &cobra.Command{
		Use:   "share <env>",
		Short: "Print a link that lets anyone who opens it reach one env until it expires",
		Long: `Prints a signed URL for <env>.<domain>. Whoever opens it before it expires
gets a cookie for that env's host only, which admits them to that env whatever
its access: entry asks for (basic, forward_auth or allow_cidrs); it admits to no
other env, and not to an env that no access: entry covers on a domain other
than localhost (such envs are closed to everyone). The links are signed with state_dir/share.key (made on first use,
mode 0600): delete that file, and restart the gateway, to revoke every link.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env := args[0]
			if !envname.Valid(env) {
				return fmt.Errorf("%q is not an env name: want a lowercase DNS label", env)
			}
			if valid <= 0 || valid > maxShare {
				return fmt.Errorf("--for %v: want a duration from 1s to %v", valid, maxShare)
			}
			cfg, err := LoadConfig(g.config)
			if err != nil {
				return err
			}
			if domain == "" {
				domain = cfg.Domains[0]
			}
			key, err := access.LoadShareKey(filepath.Join(cfg.StateDir, access.ShareKeyFile))
			if err != nil {
				return err
			}
			until := time.Now().Add(valid).Truncate(time.Second)
			u := url.URL{Scheme: "http", Host: env + "." + domain, Path: access.SharePath + key.Token(env, until)}
			listen, dflt := cfg.Listen.HTTP, "80"
			if certs.Mode(cfg.TLS.Mode) != certs.ModeOff {
				u.Scheme, listen, dflt = "https", cfg.Listen.HTTPS, "443"
			}
			if _, port, err := net.SplitHostPort(listen); err == nil && port != dflt {
				u.Host = net.JoinHostPort(u.Host, port)
			}
			fmt.Fprintln(cmd.OutOrStdout(), u.String())
			fmt.Fprintf(cmd.ErrOrStderr(), "valid until %s\n", until.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().DurationVar(&valid, "for", 24*time.Hour, "how long the link stays valid")
	cmd.Flags().StringVar(&domain, "domain", "", "the domain of the link (default: the first of domains)")
	return cmd
}
