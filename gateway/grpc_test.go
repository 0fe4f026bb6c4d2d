package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// grpcHandler is a gRPC server (which speaks HTTP/2 only) as an
// http.Handler, until the test ends: the health service, whose "ticker"
// service flips between SERVING and NOT_SERVING every 50 ms (a server
// stream that keeps sending), and reflection (a bidirectional stream).
func grpcHandler(t *testing.T) http.Handler {
	s := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	tick := time.NewTicker(50 * time.Millisecond)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		serving := true
		for {
			select {
			case <-tick.C:
			case <-done:
				return
			}
			serving = !serving
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if serving {
				st = healthpb.HealthCheckResponse_SERVING
			}
			hs.SetServingStatus("ticker", st)
		}
	}()
	t.Cleanup(func() {
		tick.Stop()
		close(done)
		<-stopped
		s.Stop()
	})
	return s
}

// grpcSettings make the gateway speak h2c to the envs of template grpc
// (grpcEnvs).
var grpcSettings = gateway.TemplateSettings{"grpc": {Upstream: gateway.UpstreamH2C}}

// grpcEnvs are fake envs for the gRPC tests: envs named grpc* run
// grpcHandler from template grpc, to which the gateway speaks h2c with
// grpcSettings; all others the demo.
func grpcEnvs(t *testing.T) func(name string) *fakeEnv {
	h := grpcHandler(t)
	tm := &lifecycle.Template{Name: "grpc", Match: "grpc*"}
	return func(name string) *fakeEnv {
		if strings.HasPrefix(name, "grpc") {
			return &fakeEnv{Ports: map[string]http.Handler{"": h}, H2C: true, Template: tm}
		}
		return &fakeEnv{}
	}
}

// internalTLS returns the gateway's TLS config from the certs package in
// internal mode, as `envgate serve` wires it, and a pool trusting its CA.
func internalTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	cm, err := certs.New(certs.Config{Mode: certs.ModeInternal, Domains: []string{"localhost"}, StateDir: t.TempDir()},
		nil, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close() })
	pem, err := os.ReadFile(cm.RootCertPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("internal CA root: no certificate")
	}
	return cm.TLSConfig(), roots
}

// grpcCalls makes a unary call, a server-streaming call and a
// bidirectional-streaming call to env grpc-* through conn. gRPC carries
// its status in HTTP trailers, so success also proves trailers pass.
func grpcCalls(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check: %v, %v", resp, err)
	}
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "ticker"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []healthpb.HealthCheckResponse_ServingStatus
	for len(seen) < 4 {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("server stream after %v: %v", seen, err)
		}
		seen = append(seen, m.Status)
	}
	if !slices.Contains(seen, healthpb.HealthCheckResponse_SERVING) || !slices.Contains(seen, healthpb.HealthCheckResponse_NOT_SERVING) {
		t.Fatalf("server stream sent %v, want both states", seen)
	}
	bidi, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each answer comes before the next question is sent: the stream is
	// open both ways at once, not a request body buffered to its end.
	for i := range 2 {
		if err := bidi.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
		}); err != nil {
			t.Fatal(err)
		}
		m, err := bidi.Recv()
		if err != nil {
			t.Fatalf("bidi stream, round %d: %v", i, err)
		}
		var names []string
		for _, s := range m.GetListServicesResponse().GetService() {
			names = append(names, s.Name)
		}
		if !slices.Contains(names, "grpc.health.v1.Health") {
			t.Fatalf("reflection listed %v", names)
		}
	}
	bidi.CloseSend()
}

func TestHTTP2OverTLSAndGRPC(t *testing.T) {
	srvTLS, roots := internalTLS(t)
	g := startFake(t, gwOptions{TLS: srvTLS, Settings: grpcSettings}, grpcEnvs(t))
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", g.Addr)
	}

	t.Run("http2", func(t *testing.T) {
		tr := &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		req, _ := http.NewRequest("GET", "https://web.localhost/echo", nil)
		req.Header.Set("Accept", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		echo := decodeEcho(t, resp)
		if resp.ProtoMajor != 2 || echo.Env != "web" {
			t.Fatalf("client got %s from env %q, want HTTP/2 from web", resp.Proto, echo.Env)
		}
		if p := echo.Headers["X-Forwarded-Proto"]; !slices.Equal(p, []string{"https"}) {
			t.Errorf("env saw X-Forwarded-Proto %v, want https", p)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "grpc-tls.localhost"})
		conn, err := grpc.NewClient("passthrough:///grpc-tls.localhost",
			grpc.WithTransportCredentials(creds),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx, "", "") }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		grpcCalls(t, conn)
	})
}

// With listen.h2c, clients speak HTTP/2 without TLS (prior knowledge),
// gRPC clients included.
func TestH2CFromClients(t *testing.T) {
	g := startFake(t, gwOptions{Server: gateway.EnableH2C, Settings: grpcSettings}, grpcEnvs(t))
	req, _ := http.NewRequest("GET", "http://web.localhost/echo", nil)
	resp, err := h2cClient(t, g.Addr).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if echo := decodeEcho(t, resp); resp.ProtoMajor != 2 || echo.Env != "web" {
		t.Fatalf("got %s from %q, want HTTP/2 from web", resp.Proto, echo.Env)
	}
	// HTTP/1.1 still works on the same listener.
	if r := g.get(t, "web.localhost", "/healthz"); r.StatusCode != 200 || r.ProtoMajor != 1 {
		t.Fatalf("HTTP/1.1 next to h2c: %s %d", r.Proto, r.StatusCode)
	}

	conn, err := grpc.NewClient("passthrough:///grpc-h2c.localhost",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", g.Addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	grpcCalls(t, conn)
}
