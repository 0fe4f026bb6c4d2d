package loadtest

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/envgate/envgate/certs/certstest"
)

// testCA makes a CA, writes it to a PEM file, and issues a certificate for
// *.dev.example.com signed by it.
func testCA(t *testing.T) (caFile string, leaf tls.Certificate) {
	t.Helper()
	ca := certstest.NewCA(t)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, ca.TLSCert(t, "*.dev.example.com")
}

// protoServer records the protocol and SNI of each request it serves.
type protoServer struct {
	mu sync.Mutex
	// Guarded by mu:
	protos     map[int]int
	sniMatches int // requests whose SNI equals their Host
}

func (p *protoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.protos[r.ProtoMajor]++
	if r.TLS != nil && r.TLS.ServerName == r.Host {
		p.sniMatches++
	}
	p.mu.Unlock()
	w.Header().Set("X-Envgate-Env", EnvName(r.Host))
}

func (p *protoServer) snapshot() (protos map[int]int, sni int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	protos = map[int]int{}
	for k, v := range p.protos {
		protos[k] = v
	}
	return protos, p.sniMatches
}

func startProtoServer(t *testing.T, tlsCert *tls.Certificate) (*protoServer, string) {
	t.Helper()
	ps := &protoServer{protos: map[int]int{}}
	srv := httptest.NewUnstartedServer(ps)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the unknown-CA case fails handshakes on purpose
	if tlsCert != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return ps, srv.Listener.Addr().(*net.TCPAddr).String()
}

func TestTLSAndHTTP2(t *testing.T) {
	caFile, leaf := testCA(t)
	const hosts = "e{{.I}}.dev.example.com"
	for _, tc := range []struct {
		name      string
		tls       bool
		o         Options
		wantProto int
		wantErr   string // error class every request should end in
	}{
		{"https http/1.1 with --ca", true, Options{Scheme: "https", CAFile: caFile}, 1, ""},
		{"https h2 with --ca", true, Options{Scheme: "https", CAFile: caFile, HTTP2: true}, 2, ""},
		{"https --insecure", true, Options{Scheme: "https", Insecure: true}, 1, ""},
		{"https unknown CA", true, Options{Scheme: "https"}, 0, "tls"},
		{"h2c", false, Options{HTTP2: true}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cert *tls.Certificate
			if tc.tls {
				cert = &leaf
			}
			ps, addr := startProtoServer(t, cert)
			o := tc.o
			o.Addr, o.Concurrency, o.Requests, o.HostTemplate, o.Envs = addr, 4, 40, hosts, 4
			rep := mustRun(t, o)
			protos, sni := ps.snapshot()
			if tc.wantErr != "" {
				if rep.Errors[tc.wantErr] != 40 || len(protos) != 0 {
					t.Errorf("errors %v, server saw %v: want 40 %s errors and no request", rep.Errors, protos, tc.wantErr)
				}
				return
			}
			if rep.OK != 40 || protos[tc.wantProto] != 40 {
				t.Errorf("ok %d, server protocols %v: want 40 ok, all HTTP/%d", rep.OK, protos, tc.wantProto)
			}
			if tc.tls && sni != 40 {
				t.Errorf("%d of 40 requests had SNI equal to their Host", sni)
			}
		})
	}
}

func TestBadCAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Run(t.Context(), Options{Addr: "127.0.0.1:1", Scheme: "https", CAFile: path, Concurrency: 1, Requests: 1}, nil)
	if err == nil {
		t.Fatal("Run with a CA file without certificates: nil error")
	}
}
