package gateway_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) {
	lifecycletest.RunDemoIfChild()
	os.Exit(m.Run())
}

// countingNetwork counts sandboxes created, on real namespaces.
type countingNetwork struct {
	lifecycle.NetnsNetwork
	creates atomic.Int64
}

func (c *countingNetwork) Create(ctx context.Context, name string) (lifecycle.Sandbox, error) {
	c.creates.Add(1)
	return c.NetnsNetwork.Create(ctx, name)
}

// gw is a gateway under test: real namespaces, real dev servers, a real
// listener on loopback.
type gw struct {
	Addr    string // 127.0.0.1:port of the HTTP listener
	Envs    *lifecycle.Manager
	Net     *countingNetwork
	NS      *netns.Manager
	Handler *gateway.Handler
	Client  *http.Client // dials Addr whatever the URL's host
	DataDir string
}

type gwOptions struct {
	Templates    []*lifecycle.Template // default: the demo
	Domains      []string              // default: localhost
	ReapInterval time.Duration
}

// startGateway runs a gateway until the test ends, then stops it and
// checks nothing leaked. Pool block 2 of netnstest is the gateway tests'.
func startGateway(t *testing.T, o gwOptions) *gw {
	t.Helper()
	if len(o.Templates) == 0 {
		o.Templates = []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})}
	}
	if len(o.Domains) == 0 {
		o.Domains = []string{"localhost"}
	}
	nsm, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netnstest.Pool(2)})
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{NS: nsm, Net: &countingNetwork{NetnsNetwork: lifecycle.NetnsNetwork{M: nsm}}, DataDir: t.TempDir()}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	g.Envs, err = lifecycle.New(lifecycle.Config{
		Templates:    o.Templates,
		DataRoot:     g.DataDir,
		Network:      g.Net,
		ReapInterval: o.ReapInterval,
		Log:          log,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.Handler, err = gateway.NewHandler(gateway.Config{Domains: o.Domains, Envs: g.Envs, Log: log})
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
	go func() {
		served <- gateway.Serve(ctx, gateway.NewHTTPServer(g.Handler, log), []net.Listener{ln}, 5*time.Second)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := g.Envs.Close(cctx); err != nil {
			t.Errorf("close envs: %v", err)
		}
	})
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, g.Addr)
		},
		MaxIdleConnsPerHost: 512,
	}
	t.Cleanup(tr.CloseIdleConnections)
	g.Client = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	return g
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
