package gateway_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/rs/zerolog"
)

// discardWriter is a ResponseWriter that keeps nothing: the benchmark
// measures the gateway's work, not a client's.
type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// benchWarm runs GET /healthz to a warm demo env through Handler.ServeHTTP
// (the direct path), in parallel; configure adjusts the gateway's Config.
func benchWarm(b *testing.B, configure func(*gateway.Config)) {
	nsm, err := netns.New(netns.Config{Prefix: netnstest.Prefix(b), Pool: netnstest.Pool(2)})
	if err != nil {
		b.Fatal(err)
	}
	data := b.TempDir()
	envs, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: time.Hour})},
		DataRoot:  data,
		Network:   lifecycle.NetnsNetwork{M: nsm},
		Launcher:  lifecycletest.Launcher(b, devserver.Config{DataRoot: data}),
		Log:       zerolog.Nop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		envs.Close(ctx)
	})
	cfg := gateway.Config{Domains: []string{"localhost"}, Envs: gateway.Lifecycle{Manager: envs}, Log: zerolog.Nop()}
	if configure != nil {
		configure(&cfg)
	}
	h, err := gateway.NewHandler(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer h.CloseIdleConnections()
	get := func(w *discardWriter) {
		r, _ := http.NewRequest("GET", "http://hot.localhost/healthz", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.RequestURI = "/healthz" // as a server sets it: the direct path needs it
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, r)
	}
	w := &discardWriter{h: http.Header{}}
	get(w) // cold start
	if w.code != 200 {
		b.Fatalf("warm-up: status %d", w.code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			get(w)
			if w.code != 200 {
				b.Errorf("status %d", w.code)
				return
			}
		}
	})
}

// BenchmarkWarmRequest is the warm request path through the handler,
// without a client's HTTP work, with and without request metrics, and
// with the per-template settings serve always passes (a lookup by the
// env's template name on every request) against none.
func BenchmarkWarmRequest(b *testing.B) {
	b.Run("metrics=off", func(b *testing.B) { benchWarm(b, nil) })
	b.Run("settings=on", func(b *testing.B) {
		name := lifecycletest.Demo(lifecycletest.DemoOptions{}).Name
		benchWarm(b, func(c *gateway.Config) {
			c.Templates = gateway.TemplateSettings{name: {Waiting: gateway.WaitPage}, "other": {Upstream: gateway.UpstreamH2C}}
		})
	})
	b.Run("metrics=on", func(b *testing.B) {
		m := admin.NewMetrics("bench", "")
		benchWarm(b, func(c *gateway.Config) { c.Requests = m })
	})
}
