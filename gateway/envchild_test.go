package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/certstest"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// Extra servers a multi-port env runs next to the demo, in the same
// process: a TCP echo server, a TLS echo server, a second HTTP server and
// a TCP server that tells each client its address as the env sees it.
// init starts them before TestMain hands the process to the demo.
const (
	echoVar     = "ENVGATE_TEST_ECHO"      // listen address of the TCP echo
	echoTLSVar  = "ENVGATE_TEST_ECHO_TLS"  // listen address of the TLS echo
	echoCertVar = "ENVGATE_TEST_ECHO_CERT" // its certificate and key, PEM
	echoKeyVar  = "ENVGATE_TEST_ECHO_KEY"
	altHTTPVar  = "ENVGATE_TEST_ALT_HTTP" // listen address of the second HTTP server
	whoVar      = "ENVGATE_TEST_WHO"      // listen address of the address teller
)

func init() {
	if a := os.Getenv(echoVar); a != "" {
		serveEcho(mustListen(a), func(c net.Conn) (net.Conn, error) { return c, nil })
	}
	if a := os.Getenv(echoTLSVar); a != "" {
		cert, err := tls.X509KeyPair([]byte(os.Getenv(echoCertVar)), []byte(os.Getenv(echoKeyVar)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo tls:", err)
			os.Exit(1)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		serveEcho(mustListen(a), func(c net.Conn) (net.Conn, error) {
			tc := tls.Server(c, cfg)
			return tc, tc.Handshake()
		})
	}
	if a := os.Getenv(altHTTPVar); a != "" {
		ln := mustListen(a)
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "alt port of %s", os.Getenv("ENVGATE_ENV"))
		})}
		go srv.Serve(ln)
	}
	if a := os.Getenv(whoVar); a != "" {
		ln := mustListen(a)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintln(c, c.RemoteAddr())
				c.Close()
			}
		}()
	}
}

// oddHandler answers the way few dev servers do but a proxy must pass on
// faithfully (see TestProxySemantics); its /conns tells conns, the count
// of connections its server accepted.
func oddHandler(conns *atomic.Int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/conns", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, conns.Load())
	})
	// The request as the env got it: its target and header fields.
	mux.HandleFunc("/head/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"target": r.RequestURI, "header": r.Header, "host": r.Host})
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	})
	mux.HandleFunc("/early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	// Hop-by-hop fields in a response, one named only by Connection.
	mux.HandleFunc("/hop", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
		io.WriteString(w, "ok")
	})
	// A 101 to a request that asked for no upgrade.
	mux.HandleFunc("/switch", func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: odd\r\nConnection: Upgrade\r\n\r\n")
		bw.Flush()
		io.Copy(io.Discard, c)
	})
	// A body that breaks off: 100 bytes promised, 5 sent.
	mux.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
		bw.Flush()
		c.Close()
	})
	// A body of unknown length whose first part must not wait for the
	// rest, which comes 3 s later.
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	return mux
}

func mustListen(addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	return ln
}

// serveEcho echoes every connection until the client half-closes, then
// half-closes back: the test sees its bytes and then EOF only if the
// gateway passes half-closes on in both directions.
func serveEcho(ln net.Listener, wrap func(net.Conn) (net.Conn, error)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				cc, err := wrap(c)
				if err != nil {
					return
				}
				io.Copy(cc, cc)
				if cw, ok := cc.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				io.Copy(io.Discard, cc)
			}()
		}
	}()
}

// multiPortTemplate is the demo (web, the default, on 3000) plus db (TCP
// echo, 5432), dbtls (TLS echo, 5433, with cert), alt (HTTP, 3001) and
// who (5434: the client's address, as the env sees it).
func multiPortTemplate(t *testing.T, cert tls.Certificate) *lifecycle.Template {
	t.Helper()
	tm := lifecycletest.Demo(lifecycletest.DemoOptions{})
	tm.Ports = map[string]int{"web": 3000, "db": 5432, "dbtls": 5433, "alt": 3001, "who": 5434}
	tm.DefaultPort = "web"
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	tm.Env[echoVar] = ":5432"
	tm.Env[echoTLSVar] = ":5433"
	tm.Env[echoCertVar] = string(certPEM)
	tm.Env[echoKeyVar] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	tm.Env[altHTTPVar] = ":3001"
	tm.Env[whoVar] = ":5434"
	if err := tm.Prepare(); err != nil {
		t.Fatal(err)
	}
	return tm
}

// testCert makes a certificate for names, signed by a new CA, and the pool
// of roots that trusts it.
func testCert(t *testing.T, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca := certstest.NewCA(t)
	return ca.TLSCert(t, names...), ca.Pool
}
