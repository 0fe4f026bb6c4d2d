package gateway_test

import (
	"cmp"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) {
	lifecycletest.RunDemoIfChild()
	os.Exit(m.Run())
}

// gw is a gateway under test on a real listener on loopback: with real
// namespaces and dev servers (startGateway, root only), or with a fake
// manager whose envs are servers on loopback (startFake).
type gw struct {
	Addr    string                         // 127.0.0.1:port of the HTTP listener
	Envs    *lifecycle.Manager             // startGateway's
	Net     *lifecycletest.CountingNetwork // startGateway's
	NS      *netns.Manager                 // startGateway's
	Fake    *fakeEnvs                      // startFake's
	Handler *gateway.Handler
	Client  *http.Client // dials Addr whatever the URL's host
	DataDir string
	// Stop shuts the gateway down as the test's end would, but leaves
	// the envs running; idempotent.
	Stop func()
}

type gwOptions struct {
	Templates    []*lifecycle.Template // default: the demo
	Domains      []string              // default: localhost
	ReapInterval time.Duration
	Limits       lifecycle.Limits
	Settings     gateway.TemplateSettings // the gateway's settings of Templates
	Config       func(*gateway.Config)    // adjusts the handler's config
	Server       func(*http.Server)       // adjusts the server (timeouts, protocols)
	TLS          *tls.Config              // serve TLS with this config
	Drain        time.Duration            // shutdown grace; default 5s
}

// startGateway runs a gateway until the test ends, then stops it and
// checks nothing leaked. Pool block 2 of netnstest is the gateway tests'.
func startGateway(t *testing.T, o gwOptions) *gw {
	t.Helper()
	if len(o.Templates) == 0 {
		o.Templates = []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})}
	}
	nsm, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netnstest.Pool(2)})
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{NS: nsm, Net: &lifecycletest.CountingNetwork{NetnsNetwork: lifecycle.NetnsNetwork{M: nsm}}, DataDir: t.TempDir()}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	var handler atomic.Pointer[gateway.Handler]
	g.Envs, err = lifecycle.New(lifecycle.Config{
		Templates:    o.Templates,
		DataRoot:     g.DataDir,
		Network:      g.Net,
		Launcher:     lifecycletest.Launcher(t, devserver.Config{DataRoot: g.DataDir}),
		ReapInterval: o.ReapInterval,
		Limits:       o.Limits,
		// The handler exists only later; until then no env can stop.
		BeforeStop: func(env string, addr netip.AddrPort) {
			if h := handler.Load(); h != nil {
				h.CloseEnvConns(env, addr)
			}
		},
		Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := g.Envs.Close(cctx); err != nil {
			t.Errorf("close envs: %v", err)
		}
	})
	serveGateway(t, g, gateway.Lifecycle{Manager: g.Envs}, o, log)
	handler.Store(g.Handler)
	return g
}

// serveGateway serves a handler for envs on a loopback listener until the
// test ends (its cleanup, registered after the caller's, runs first) and
// fills in g's Addr, Handler, Client and Stop.
func serveGateway(t testing.TB, g *gw, envs gateway.Envs, o gwOptions, log zerolog.Logger) {
	t.Helper()
	if len(o.Domains) == 0 {
		o.Domains = []string{"localhost"}
	}
	hcfg := gateway.Config{Domains: o.Domains, Envs: envs, Log: log, Templates: o.Settings}
	if o.Config != nil {
		o.Config(&hcfg)
	}
	var err error
	g.Handler, err = gateway.NewHandler(hcfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	srv := gateway.NewHTTPServer(g.Handler, log)
	if o.Server != nil {
		o.Server(srv)
	}
	var sln net.Listener = ln
	if o.TLS != nil {
		srv.TLSConfig = o.TLS
		sln = tls.NewListener(ln, o.TLS)
	}
	drain := cmp.Or(o.Drain, 5*time.Second)
	go func() {
		served <- gateway.Serve(ctx, srv, []net.Listener{sln}, drain)
	}()
	// Upgraded connections get the same grace, ended by the handler.
	upgradesDone := make(chan struct{})
	go func() {
		defer close(upgradesDone)
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), drain)
		defer scancel()
		g.Handler.Shutdown(sctx)
	}()
	var stopped atomic.Bool
	g.Stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		// Both end within the drain; the margin is for a loaded machine.
		limit := time.After(drain + 30*time.Second)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-limit:
			t.Errorf("gateway still serving %v after stop", drain+30*time.Second)
			return
		}
		select {
		case <-upgradesDone:
		case <-limit:
			t.Errorf("upgraded connections still open %v after stop", drain+30*time.Second)
		}
	}
	t.Cleanup(g.Stop)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, g.Addr)
		},
		MaxIdleConnsPerHost: 512,
	}
	t.Cleanup(tr.CloseIdleConnections)
	g.Client = &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// get fetches http://host/path through the gateway with optional headers
// as key, value pairs.
func (g *gw) get(t *testing.T, host, path string, kv ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := g.Client.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
