package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// TestProxySemantics checks the proxy's HTTP rules against a server that
// uses the rarer parts of HTTP/1.1, for a GET (the direct path), a POST
// with a body (httputil.ReverseProxy), and a GET from an HTTP/2 client
// (h2c; the direct path too): all must behave the same.
func TestProxySemantics(t *testing.T) {
	g := oddGateway(t)
	const host = "http://odd--sem.localhost"
	h2Client := h2cClient(t, g.Addr)

	var client *http.Client
	do := func(t *testing.T, method, path string, hdr map[string]string, trace *httptrace.ClientTrace) *http.Response {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("payload")
		}
		req, err := http.NewRequest(method, host+path, body)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if trace != nil {
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	readAll := func(t *testing.T, res *http.Response) string {
		t.Helper()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		return string(b)
	}

	for _, variant := range []struct {
		name, method string
		client       *http.Client
	}{
		{"GET", http.MethodGet, g.Client},
		{"POST", http.MethodPost, g.Client},
		{"GET over h2c", http.MethodGet, h2Client},
	} {
		method, h2 := variant.method, variant.client == h2Client
		t.Run(variant.name, func(t *testing.T) {
			client = variant.client
			t.Run("request head", func(t *testing.T) {
				const target = "/head/a%2Fb?q=1&r=%20x"
				hdr := map[string]string{
					"Te":                  "trailers",
					"Proxy-Authorization": "Basic eDp4",
					"X-Keep":              "1",
				}
				if !h2 { // HTTP/2 has no connection-specific fields
					hdr["Connection"], hdr["X-Drop"], hdr["Keep-Alive"], hdr["Upgrade"] = "X-Drop", "1", "timeout=5", "h2c"
				}
				res := do(t, method, target, hdr, nil)
				var seen seenHead
				if err := json.NewDecoder(res.Body).Decode(&seen); err != nil {
					t.Fatalf("status %d: %v", res.StatusCode, err)
				}
				if seen.Target != target || seen.Host != "odd--sem.localhost" {
					t.Errorf("env got target %q host %q, want %q %q", seen.Target, seen.Host, target, "odd--sem.localhost")
				}
				for _, k := range []string{"Connection", "X-Drop", "Keep-Alive", "Proxy-Authorization", "Upgrade"} {
					if v, ok := seen.Header[k]; ok {
						t.Errorf("hop-by-hop %s: %q reached the env", k, v)
					}
				}
				if got := seen.Header["Te"]; len(got) != 1 || got[0] != "trailers" {
					t.Errorf("Te %q, want [trailers]", got)
				}
				if got := seen.Header["X-Keep"]; len(got) != 1 || got[0] != "1" {
					t.Errorf("X-Keep %q, want [1]", got)
				}
			})
			t.Run("trailers", func(t *testing.T) {
				res := do(t, method, "/trailers", nil, nil)
				if body := readAll(t, res); body != "body" || res.Trailer.Get("X-Sum") != "42" {
					t.Errorf("body %q trailer X-Sum %q, want body and 42", body, res.Trailer.Get("X-Sum"))
				}
			})
			t.Run("103 early hints", func(t *testing.T) {
				var early []string
				res := do(t, method, "/early", nil, &httptrace.ClientTrace{
					Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
						early = append(early, http.StatusText(code)+": "+h.Get("Link"))
						return nil
					},
				})
				if body := readAll(t, res); res.StatusCode != 200 || body != "final" {
					t.Errorf("final %d %q, want 200 final", res.StatusCode, body)
				}
				if len(early) != 1 || early[0] != "Early Hints: </style.css>; rel=preload" {
					t.Errorf("1xx responses %q, want one 103 with the Link", early)
				}
				if l := res.Header.Get("Link"); l != "" {
					t.Errorf("final response has the 103's Link %q", l)
				}
			})
			t.Run("hop-by-hop response fields", func(t *testing.T) {
				res := do(t, method, "/hop", nil, nil)
				readAll(t, res)
				if res.Header.Get("X-Secret") != "" || res.Header.Get("Keep-Alive") != "" || res.Header.Get("X-Kept") != "yes" {
					t.Errorf("response header %v: want X-Kept only", res.Header)
				}
			})
			t.Run("unasked switch", func(t *testing.T) {
				res := do(t, method, "/switch", nil, nil)
				readAll(t, res)
				if res.StatusCode != http.StatusBadGateway {
					t.Errorf("status %d, want 502", res.StatusCode)
				}
			})
			t.Run("truncated body", func(t *testing.T) {
				// The gateway may fail the response before its head or
				// break its body off; it must never end it cleanly.
				var body io.Reader
				if method == http.MethodPost {
					body = strings.NewReader("payload")
				}
				req, _ := http.NewRequest(method, host+"/truncated", body)
				res, err := client.Do(req)
				if err == nil {
					defer res.Body.Close()
					var b []byte
					if b, err = io.ReadAll(res.Body); err == nil {
						t.Fatalf("got %d %q and a clean end; the env sent 5 of 100 bytes", res.StatusCode, b)
					}
				}
				if !h2 && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("error %v, want the connection cut (EOF)", err)
				} // over HTTP/2 the stream is reset instead
			})
			t.Run("stream of unknown length", func(t *testing.T) {
				began := time.Now()
				res := do(t, method, "/stream", nil, nil)
				line, err := bufio.NewReader(res.Body).ReadString('\n')
				if err != nil || line != "first\n" {
					t.Fatalf("first line %q, %v", line, err)
				}
				// The env sends the rest 3 s later: the first line must not
				// have waited for it.
				if d := time.Since(began); d > 2*time.Second {
					t.Errorf("first line after %s: buffered until the rest came", d)
				}
			})
		})
	}
}
