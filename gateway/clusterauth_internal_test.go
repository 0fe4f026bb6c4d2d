package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123")

// received is out as the next node reads it off the wire.
func received(out *http.Request) *http.Request {
	r := httptest.NewRequest(out.Method, out.URL.RequestURI(), nil)
	r.Host = out.Host
	r.Header = out.Header.Clone()
	return r
}

func signed(method, host, target string, at time.Time, show bool) *http.Request {
	out := httptest.NewRequest(method, target, nil)
	out.Host = host
	SignHop(testSecret, "gw-a", at, show, out)
	return out
}

// A hop verifies only as signed: same secret, method, host, target,
// node and flags, within the clock skew allowed.
func TestVerifyHop(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	hp, err := verifyHop(testSecret, now, received(signed("GET", "a.localhost", "/x?y=1", now, true)))
	if err != nil || hp.node != "gw-a" || !hp.showOutput {
		t.Fatalf("a good hop: %+v, %v", hp, err)
	}
	if hp, err := verifyHop(testSecret, now.Add(59*time.Second), received(signed("POST", "a.localhost", "/", now, false))); err != nil || hp.showOutput {
		t.Fatalf("a good hop 59s old without output: %+v, %v", hp, err)
	}
	for name, mangle := range map[string]func(r *http.Request){
		"method": func(r *http.Request) { r.Method = "POST" },
		"host":   func(r *http.Request) { r.Host = "b.localhost" },
		"target": func(r *http.Request) { r.RequestURI = "/x?y=2" },
		"node":   func(r *http.Request) { r.Header.Set(HopHeader, "gw-b") },
		"flags": func(r *http.Request) {
			a := r.Header.Get(HopAuthHeader)
			r.Header.Set(HopAuthHeader, strings.Replace(a, ".o.", ".-.", 1))
		},
		"no auth": func(r *http.Request) { r.Header.Del(HopAuthHeader) },
		"no node": func(r *http.Request) { r.Header.Del(HopHeader) },
		"two":     func(r *http.Request) { r.Header.Add(HopAuthHeader, r.Header.Get(HopAuthHeader)) },
		"garbage": func(r *http.Request) { r.Header.Set(HopAuthHeader, "1800000000.o.AAAA") },
	} {
		r := received(signed("GET", "a.localhost", "/x?y=1", now, true))
		mangle(r)
		if hp, err := verifyHop(testSecret, now, r); err == nil {
			t.Errorf("%s changed: verified as %+v", name, hp)
		}
	}
	if _, err := verifyHop([]byte("another secret, 20b"), now, received(signed("GET", "a.localhost", "/", now, false))); err == nil {
		t.Error("verified under another secret")
	}
	for _, skew := range []time.Duration{61 * time.Second, -61 * time.Second} {
		if _, err := verifyHop(testSecret, now.Add(skew), received(signed("GET", "a.localhost", "/", now, false))); err == nil {
			t.Errorf("verified %v away", skew)
		}
	}
}

// A TCP hop's flag is under the signature: it verifies as a TCP hop, and
// an HTTP hop's signature does not pass for one, nor the reverse.
func TestVerifyTCPHop(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	out := TCPHopRequest(testSecret, "gw-a", "10.0.0.5:8080", "db--a.localhost", "db", now)
	hp, err := verifyHop(testSecret, now, received(out))
	if err != nil || !hp.tcp || hp.showOutput || hp.node != "gw-a" {
		t.Fatalf("a TCP hop: %+v, %v", hp, err)
	}
	if !isTCPHopUpgrade(out.Header) || out.URL.RequestURI() != tcpHopPath+"?port=db" {
		t.Fatalf("a TCP hop asks for %q at %q", out.Header.Get("Upgrade"), out.URL.RequestURI())
	}
	for _, flags := range []string{hopFlagOutput, hopFlagNoOutput} {
		r := received(out)
		r.Header.Set(HopAuthHeader, strings.Replace(r.Header.Get(HopAuthHeader), "."+hopFlagTCP+".", "."+flags+".", 1))
		if hp, err := verifyHop(testSecret, now, r); err == nil {
			t.Errorf("a TCP hop's signature with flags %q: verified as %+v", flags, hp)
		}
	}
	http := signed("GET", "db--a.localhost", tcpHopPath+"?port=db", now, true)
	r := received(http)
	r.Header.Set(HopAuthHeader, strings.Replace(r.Header.Get(HopAuthHeader), "."+hopFlagOutput+".", "."+hopFlagTCP+".", 1))
	if hp, err := verifyHop(testSecret, now, r); err == nil {
		t.Errorf("an HTTP hop's signature with the TCP flag: verified as %+v", hp)
	}
}

// FuzzVerifyHop: any hop headers a client makes up, for any request, are
// refused without a panic, unless they are the signature itself.
func FuzzVerifyHop(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	good := signed("GET", "a.localhost", "/", now, true)
	f.Add("gw-a", good.Header.Get(HopAuthHeader), "GET", "a.localhost", "/")
	f.Add("gw-a", "1800000000.o.", "GET", "a.localhost", "/")
	f.Add("", "..", "POST", "", "*")
	f.Fuzz(func(t *testing.T, node, auth, method, host, target string) {
		r := &http.Request{Method: method, Host: host, RequestURI: target, Header: http.Header{}}
		r.Header.Set(HopHeader, node)
		r.Header.Set(HopAuthHeader, auth)
		hp, err := verifyHop(testSecret, now, r)
		if err != nil {
			return
		}
		at, rest, _ := strings.Cut(auth, ".")
		flags, mac, _ := strings.Cut(rest, ".")
		if mac != hopMAC(testSecret, node, at, flags, method, host, target) || hp.node != node {
			t.Fatalf("verified %+v for node %q auth %q on %s %s %s", hp, node, auth, method, host, target)
		}
	})
}
