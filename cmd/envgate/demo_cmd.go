package main

import (
	"flag"
	"os"

	"github.com/envgate/envgate/loadtest/demo"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	o := demo.Options{Log: os.Stderr}
	cmd := &cobra.Command{
		Use:   "demo-server",
		Short: "Run the built-in demo dev server (what the default template runs in each env)",
		Long: demo.Description + `

A template command "{{.Self}} demo-server ..." runs envgate-demo, this same
server in a small binary that starts in about a millisecond, when it sits
beside the envgate binary (make build puts it there).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), o)
		},
	}
	fs := flag.NewFlagSet("demo-server", flag.ContinueOnError)
	o.Flags(fs)
	cmd.Flags().AddGoFlagSet(fs)
	return cmd
}
