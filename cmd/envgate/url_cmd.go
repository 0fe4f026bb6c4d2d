package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/envgate/envgate/lifecycle/sources"
	"github.com/spf13/cobra"
)

func newURLCmd(g *globalFlags) *cobra.Command {
	var domain string
	cmd := &cobra.Command{
		Use:   "url <branch>",
		Short: "Print the preview URL of a git branch (no running gateway needed)",
		Long: `Prints https://<env>.<domain>/ for a branch of source.repo (kind git): the
env name is the branch's label, shortened with a hash suffix when it would
collide with another branch's or exceed 63 characters. The branches are read
from the mirror in state_dir/git when there is one, else from the repository.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := LoadConfig(g.config)
			if err != nil {
				return err
			}
			if cfg.Source.Kind != sourceGit {
				return fmt.Errorf("source.kind is %s: preview URLs need kind git", cfg.Source.Kind)
			}
			if domain == "" {
				domain = cfg.Domains[0]
			}
			heads, err := branchHeads(cmd, cfg)
			if err != nil {
				return err
			}
			branches := make([]string, 0, len(heads))
			for b := range heads {
				branches = append(branches, b)
			}
			env := envname.LabelOf(branches, args[0])
			if env == "" {
				return fmt.Errorf("branch %q: not in %s (or it has no letter or digit)", args[0], cfg.Source.Repo)
			}
			fmt.Fprintln(cmd.OutOrStdout(), envURL(cfg, env, domain))
			return nil
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "the domain of the URL (default: the first of domains)")
	return cmd
}

// branchHeads reads the branches of the mirror if serve made one, else of
// source.repo itself.
func branchHeads(cmd *cobra.Command, cfg *Config) (map[string]string, error) {
	m := cfg.mirror()
	if _, err := os.Stat(filepath.Join(m.Dir, "HEAD")); err == nil && cfg.Source.mirrored() {
		if heads, err := m.Heads(cmd.Context()); err == nil {
			return heads, nil
		}
		// The mirror is root's (0700): another user asks the repository.
	}
	return sources.RemoteHeads(cmd.Context(), cfg.Source.Repo, cfg.Source.CredentialsFile)
}

// envURL is the root URL of env under domain, with the scheme and port
// the gateway serves.
func envURL(cfg *Config, env, domain string) string {
	u := url.URL{Scheme: "http", Host: env + "." + domain, Path: "/"}
	listen, dflt := cfg.Listen.HTTP, "80"
	if certs.Mode(cfg.TLS.Mode) != certs.ModeOff {
		u.Scheme, listen, dflt = "https", cfg.Listen.HTTPS, "443"
	}
	if _, port, err := net.SplitHostPort(listen); err == nil && port != dflt {
		u.Host = net.JoinHostPort(u.Host, port)
	}
	return u.String()
}
