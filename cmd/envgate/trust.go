package main

import (
	"fmt"

	"github.com/envgate/envgate/certs"
	"github.com/spf13/cobra"
)

func newTrustCmd(g *globalFlags) *cobra.Command {
	var install bool
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Show (and optionally install) the local CA's root certificate",
		Long: `In tls.mode internal, envgate issues certificates from a local CA whose root
lives in state_dir/ca (created on first use; the key is 0600). This prints the
root's path and how to make browsers trust it; --install adds it to the system
store (/usr/local/share/ca-certificates + update-ca-certificates).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := LoadConfig(g.config)
			if err != nil {
				return err
			}
			cc := cfg.certsConfig()
			cc.Mode = certs.ModeInternal
			m, err := certs.New(cc, nil, log)
			if err != nil {
				return err
			}
			defer m.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, m.RootCertPath())
			if install {
				if err := certs.InstallRoot(m.RootCertPath(), out); err != nil {
					return err
				}
			}
			certs.PrintBrowserTrust(m.RootCertPath(), out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "install the root into the system trust store")
	return cmd
}
