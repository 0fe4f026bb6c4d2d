package gateway

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

func TestHostOnlyCookie(t *testing.T) {
	domains := []string{"dev.example.com", "localhost"}
	for in, want := range map[string]string{
		"s=1; Domain=.localhost":                          "s=1",
		"s=1; Path=/; domain=localhost; HttpOnly":         "s=1; Path=/; HttpOnly",
		"s=1; Domain=.dev.example.com; Secure":            "s=1; Secure",
		"s=1; Domain=example.com":                         "s=1", // a parent of the shared domain
		"s=1; DOMAIN = Dev.Example.COM.":                  "s=1", // case, spaces, trailing dot
		"s=1; Domain=a.dev.example.com":                   "",    // the env's own host: kept
		"s=1; Domain=other.test":                          "",    // the browser refuses it anyway
		"s=1; Path=/":                                     "",    // host-only already
		"s=1":                                             "",    // no attributes
		"s=domain=localhost":                              "",    // a value, not an attribute
		"s=1; Domain=.localhost; Domain=a.localhost; Max": "s=1; Domain=a.localhost; Max",
	} {
		got, changed := hostOnlyCookie(in, domains)
		if want == "" {
			if changed || got != in {
				t.Errorf("%q -> %q, want it unchanged", in, got)
			}
			continue
		}
		if !changed || got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}

func TestScopeCookies(t *testing.T) {
	h := &Handler{domains: []string{"localhost"}}
	hdr := http.Header{"Set-Cookie": {"a=1; Domain=.localhost", "b=2"}}
	h.scopeCookies(hdr, nil)
	if got := hdr["Set-Cookie"]; got[0] != "a=1" || got[1] != "b=2" {
		t.Fatalf("%q", got)
	}
	hdr = http.Header{"Set-Cookie": {"a=1; Domain=.localhost"}}
	h.tmpls = TemplateSettings{"shared": {SharedDomainCookies: true}}
	h.scopeCookies(hdr, &lifecycle.Template{Name: "shared"})
	if got := hdr["Set-Cookie"]; got[0] != "a=1; Domain=.localhost" {
		t.Fatalf("opted out: %q", got)
	}
	hdr = http.Header{"Set-Cookie": {"a=1; Domain=.localhost"}}
	h.scopeCookies(hdr, &lifecycle.Template{Name: "other"})
	if got := hdr["Set-Cookie"]; got[0] != "a=1" {
		t.Fatalf("a template that did not opt out: %q", got)
	}
	// The warm path: a response without cookies costs no allocation.
	hdr = http.Header{"Content-Type": {"text/plain"}}
	if n := testing.AllocsPerRun(100, func() { h.scopeCookies(hdr, nil) }); n != 0 {
		t.Fatalf("%v allocations without Set-Cookie", n)
	}
}

func TestNewEnvLimit(t *testing.T) {
	l := NewNewEnvLimit(3, time.Minute, false)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 3 {
		if w := l.take(a); w != 0 {
			t.Fatalf("take %d: wait %v", i, w)
		}
	}
	w := l.take(a)
	if w <= 0 || w > 20*time.Second {
		t.Fatalf("4th take: wait %v, want about 20s (a token every 20s)", w)
	}
	if l.take(b) != 0 {
		t.Fatal("another address shares the bucket")
	}
	now = now.Add(20 * time.Second)
	if l.take(a) != 0 {
		t.Fatal("no token after 20s")
	}
	if l.applies(true) || !l.applies(false) || (*NewEnvLimit)(nil).applies(false) {
		t.Fatal("applies")
	}
	if !NewNewEnvLimit(1, time.Second, true).applies(true) {
		t.Fatal("an explicit limit must apply on localhost too")
	}
}

func TestIsLocalHost(t *testing.T) {
	for h, want := range map[string]bool{
		"a.localhost": true, "a.localhost:8080": true, "A.LOCALHOST.": true, "localhost": true,
		"a.notlocalhost": false, "a.dev.example.com": false, "localhost.example.com": false, "": false,
	} {
		if isLocalHost(h) != want {
			t.Errorf("isLocalHost(%q) = %v", h, !want)
		}
	}
}

type fakeKnower struct{ known, refused map[string]bool }

func (f fakeKnower) Known(n string) bool { return f.known[n] }
func (f fakeKnower) Allowed(n string) error {
	if f.refused[n] {
		return errorString("refused")
	}
	return nil
}

// Only names that are new and could start take a token.
func TestNewEnvLimitCounts(t *testing.T) {
	l := NewNewEnvLimit(1, time.Minute, false)
	k := fakeKnower{known: map[string]bool{"old": true}, refused: map[string]bool{"nope": true}}
	for env, want := range map[string]bool{"old": false, "nope": false, "new": true} {
		if got := l.counts(k, env, false); got != want {
			t.Errorf("%s counts %v, want %v", env, got, want)
		}
	}
	if l.counts(k, "new", true) || l.counts(nil, "new", false) {
		t.Error("counted on localhost, or without a knower")
	}
}
