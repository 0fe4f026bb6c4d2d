package demo

import (
	"flag"
	"os"
)

// Description is what the demo server serves, for its commands' help
// (`envgate demo-server` and cmd/envgate-demo).
const Description = `A small dev server for trying envgate and for its tests:
  /            HTML page naming its env and host, with a visit counter kept in --data-dir
  /healthz     200 ok
  /ws          WebSocket echo
  /events      server-sent events (?interval=1s&count=N)
  /slow?ms=N   answers after N ms
  /echo        the request as JSON (headers, body size)
  /upload, /download?bytes=N   streamed bodies`

// Flags defines the demo server's command-line flags on fs, which set o
// when fs is parsed. Their defaults come from the environment an env's
// dev server gets (PORT, ENVGATE_ENV, ENVGATE_DATA_DIR). `envgate
// demo-server` and cmd/envgate-demo both take exactly these.
func (o *Options) Flags(fs *flag.FlagSet) {
	listen := DefaultListen
	if p := os.Getenv("PORT"); p != "" {
		listen = ":" + p
	}
	fs.StringVar(&o.Listen, "listen", listen, "address to listen on (default :8080, or :$PORT when PORT is set)")
	fs.StringVar(&o.Name, "name", os.Getenv(EnvNameVar), "env name to show (default $ENVGATE_ENV, else the Host's first label)")
	fs.StringVar(&o.DataDir, "data-dir", os.Getenv("ENVGATE_DATA_DIR"), "where the visit counter is kept (default $ENVGATE_DATA_DIR; empty: in memory)")
	fs.DurationVar(&o.BootDelay, "boot-delay", 0, "sleep this long before listening, like a slow dev server")
}
