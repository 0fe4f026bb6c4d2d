package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newConfigCmd(g *globalFlags) *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the embedded default config, or check a config file",
		Long: `Without flags, print the embedded default configuration (a starting point
for your own file). With --config FILE --check, load FILE and report every
problem with its file, line and field, or "ok"; warnings (secrets other
users can read, templates whose envs share a user) go to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !check {
				_, err := os.Stdout.Write(defaultConfig)
				return err
			}
			c, err := LoadConfig(g.config)
			if err != nil {
				return err
			}
			for _, w := range append(c.secretWarnings(), c.userWarnings()...) {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "validate the file given by --config instead of printing the default")
	return cmd
}
