package gateway_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/envgate/envgate/gateway"
)

// recordingPlacer places env "moved" nowhere it may send a hop on (its
// Place fails for a hop, as cluster.Node.Place does when the env is owned
// elsewhere) and every other env on the node at addr ("" for here); it
// records each call's hopped.
type recordingPlacer struct {
	addr   string
	mu     sync.Mutex
	hopped []bool // guarded by mu
}

var errOwnedElsewhere = errors.New("env is owned by another node")

func (p *recordingPlacer) Place(_ context.Context, env string, hopped bool) (string, error) {
	p.mu.Lock()
	p.hopped = append(p.hopped, hopped)
	p.mu.Unlock()
	if env == "moved" && hopped {
		return "", errOwnedElsewhere
	}
	return p.addr, nil
}
func (p *recordingPlacer) OwnerAddr(string) string { return p.addr }
func (p *recordingPlacer) Live(string) bool        { return p.addr != "" }

// calls returns the hopped of each Place call so far and forgets them.
func (p *recordingPlacer) calls() []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.hopped
	p.hopped = nil
	return c
}

// TestClusterForward: a node forwards requests for another node's env
// over kept-alive connections (30 client connections to the first node,
// one connection between the nodes), each request marked as a hop that
// the owner authenticates and places as hopped; and a hop the owner may
// not serve is answered there (503 with Retry-After), not sent on.
func TestClusterForward(t *testing.T) {
	secret := []byte("test-cluster-secret-0123456789")
	ownerPl := &recordingPlacer{}
	var nodeConns atomic.Int64
	owner := startFake(t, gwOptions{
		Config: func(c *gateway.Config) { c.Cluster, c.Node, c.ClusterSecret = ownerPl, "gw-b", secret },
		Server: func(s *http.Server) {
			s.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					nodeConns.Add(1)
				}
			}
		},
	}, func(string) *fakeEnv { return &fakeEnv{} })
	frontPl := &recordingPlacer{addr: owner.Addr}
	front := startFake(t, gwOptions{
		Config: func(c *gateway.Config) { c.Cluster, c.Node, c.ClusterSecret = frontPl, "gw-a", secret },
	}, func(name string) *fakeEnv {
		t.Errorf("env %s started on the node that forwards", name)
		return nil
	})
	// A new client connection to the front node for each request.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(env string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+front.Addr+"/", nil)
		req.Host = env + ".localhost"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	const n = 30
	for i := range n {
		resp, body := get("e1")
		if resp.StatusCode != 200 || !strings.Contains(body, "<h1>e1</h1>") {
			t.Fatalf("request %d for e1 through gw-a: status %d, body %.200q", i, resp.StatusCode, body)
		}
	}
	if c := nodeConns.Load(); c != 1 {
		t.Errorf("%d requests forwarded over %d connections between the nodes, want 1 kept alive", n, c)
	}
	front.Fake.mu.Lock()
	if len(front.Fake.tried) != 0 {
		t.Errorf("the forwarding node acquired envs: %v", front.Fake.tried)
	}
	front.Fake.mu.Unlock()
	if got := owner.Fake.acquires.Load(); got != n {
		t.Errorf("the owner acquired e1 %d times for %d requests", got, n)
	}
	for name, c := range map[string][]bool{"gw-a": frontPl.calls(), "gw-b": ownerPl.calls()} {
		want := name == "gw-b" // the owner sees hops; the first node, clients
		if len(c) != n {
			t.Errorf("%s placed %d times, want %d", name, len(c), n)
		}
		for i, h := range c {
			if h != want {
				t.Errorf("%s's placement %d: hopped %v, want %v", name, i, h, want)
				break
			}
		}
	}

	// The owner's view says another node owns "moved": the hop ends there.
	resp, body := get("moved")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, errOwnedElsewhere.Error()) {
		t.Errorf("moved through gw-a: status %d, Retry-After %q, body %.300q; want the owner's 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if c := frontPl.calls(); len(c) != 1 || c[0] {
		t.Errorf("gw-a placed moved with hopped %v; want once, from a client", c)
	}
	if c := ownerPl.calls(); len(c) != 1 || !c[0] {
		t.Errorf("gw-b placed moved with hopped %v; want once, as a hop", c)
	}
	if c := nodeConns.Load(); c != 1 {
		t.Errorf("%d connections between the nodes after the refused hop, want still 1", c)
	}
}
