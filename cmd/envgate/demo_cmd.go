package main

import (
	"os"

	"github.com/envgate/envgate/loadtest/demo"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	o := demo.Options{Log: os.Stderr}
	cmd := &cobra.Command{
		Use:   "demo-server",
		Short: "Run the built-in demo dev server (what the default template runs in each env)",
		Long: `A small dev server for trying envgate and for its tests:
  /            HTML page naming its env and host, with a visit counter kept in --data-dir
  /healthz     200 ok
  /ws          WebSocket echo
  /events      server-sent events (?interval=1s&count=N)
  /slow?ms=N   answers after N ms
  /echo        the request as JSON (headers, body size)
  /upload, /download?bytes=N   streamed bodies`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), o)
		},
	}
	listen := demo.DefaultListen
	if p := os.Getenv("PORT"); p != "" {
		listen = ":" + p
	}
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", listen, "address to listen on (default :8080, or :$PORT when PORT is set)")
	f.StringVar(&o.Name, "name", os.Getenv(demo.EnvNameVar), "env name to show (default $ENVGATE_ENV, else the Host's first label)")
	f.StringVar(&o.DataDir, "data-dir", os.Getenv("ENVGATE_DATA_DIR"), "where the visit counter is kept (default $ENVGATE_DATA_DIR; empty: in memory)")
	f.DurationVar(&o.BootDelay, "boot-delay", 0, "sleep this long before listening, like a slow dev server")
	return cmd
}
