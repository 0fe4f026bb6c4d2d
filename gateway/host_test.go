package gateway

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var domains = []string{"localhost", "dev.example.com"}

func TestParseHostValid(t *testing.T) {
	for host, want := range map[string]string{
		"feature-x.localhost":                  "feature-x",
		"feature-x.localhost:8080":             "feature-x",
		"Feature-X.LocalHost":                  "feature-x",
		"feature-x.localhost.":                 "feature-x",
		"feature-x.localhost.:8080":            "feature-x",
		"a.dev.example.com":                    "a",
		"0.localhost":                          "0",
		strings.Repeat("a", 63) + ".localhost": strings.Repeat("a", 63),
		"db--feature-x.dev.example.com":        "db--feature-x",
		"xn--bcher-kva.localhost":              "xn--bcher-kva",
		"feature-x.localhost:1":                "feature-x",
		"feature-x.localhost:65535":            "feature-x",
		"feature-x.localhost:08080":            "feature-x",
		"feature-x.localhost:":                 "feature-x", // RFC 3986: empty port, the default
		"feature-x.localhost.:":                "feature-x",
	} {
		got, err := ParseHost(host, domains)
		if err != nil || got != want {
			t.Errorf("ParseHost(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
}

func TestParseHostInvalid(t *testing.T) {
	for host, status := range map[string]int{
		"":                                      http.StatusBadRequest,
		"127.0.0.1":                             http.StatusBadRequest,
		"127.0.0.1:8080":                        http.StatusBadRequest,
		"[::1]:8080":                            http.StatusBadRequest,
		"::1":                                   http.StatusBadRequest,
		"localhost":                             http.StatusNotFound,
		"localhost:8080":                        http.StatusNotFound,
		".localhost":                            http.StatusNotFound,
		"a.b.localhost":                         http.StatusNotFound,
		"a..localhost":                          http.StatusNotFound,
		"a_b.localhost":                         http.StatusBadRequest,
		"-a.localhost":                          http.StatusBadRequest,
		"a-.localhost":                          http.StatusBadRequest,
		strings.Repeat("a", 64) + ".localhost":  http.StatusBadRequest,
		"xn--.localhost":                        http.StatusBadRequest,
		"xn--a.localhost":                       http.StatusBadRequest,
		"feature-x.example.org":                 http.StatusNotFound,
		"feature-xlocalhost":                    http.StatusNotFound,
		"feature-x.localhost..":                 http.StatusNotFound,
		"feature-x.localhost:80a":               http.StatusBadRequest,
		"feature-x.localhost:123456":            http.StatusBadRequest,
		"a.localhost:99999":                     http.StatusBadRequest,
		"a.localhost:65536":                     http.StatusBadRequest,
		"a.localhost:0":                         http.StatusBadRequest,
		"a.localhost:00000":                     http.StatusBadRequest,
		"a.localhost:-1":                        http.StatusBadRequest,
		"a.localhost:+80":                       http.StatusBadRequest,
		"a.localhost: 80":                       http.StatusBadRequest,
		"a.localhost:0x50":                      http.StatusBadRequest,
		"a.localhost:８０":                        http.StatusBadRequest,
		"a.localhost:000000000000000000065536":  http.StatusBadRequest,
		"api--a.localhost:99999":                http.StatusBadRequest,
		"localhost:99999":                       http.StatusBadRequest,
		"fé.localhost":                          http.StatusBadRequest,
		"\u212aey.localhost":                    http.StatusBadRequest, // Kelvin sign, not k
		"a b.localhost":                         http.StatusBadRequest,
		"a%2e.localhost":                        http.StatusBadRequest,
		"a/b.localhost":                         http.StatusBadRequest,
		strings.Repeat("a.", 200) + "localhost": http.StatusBadRequest,
	} {
		env, err := ParseHost(host, domains)
		var he *HostError
		if !errors.As(err, &he) {
			t.Errorf("ParseHost(%q) = %q, %v; want a HostError", host, env, err)
			continue
		}
		if he.Status != status {
			t.Errorf("ParseHost(%q) status %d (%s), want %d", host, he.Status, he.Reason, status)
		}
	}
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"feature-x.localhost", "a.b.localhost", "[::1]:80", "A.LOCALHOST.", "xn--bcher-kva.dev.example.com:443", "", ":", "a.localhost:0", "\u212aey.localhost"} {
		f.Add(s)
	}
	for _, s := range []string{"a.localhost:99999", "a.localhost:65535", "a.localhost:", "a.localhost:0080", "a.localhost:18446744073709551617"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		env, err := ParseHost(host, domains)
		if i := strings.LastIndexByte(host, ':'); err == nil && i >= 0 {
			// Whatever it accepts after the last ':' is a TCP port or
			// nothing (the default), as net/url reads it.
			port := host[i+1:]
			if port != "" {
				n, perr := strconv.ParseUint(port, 10, 64)
				if perr != nil || n < 1 || n > 65535 {
					t.Fatalf("ParseHost(%q) = %q with port %q", host, env, port)
				}
			}
		}
		if err != nil {
			var he *HostError
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 {
				t.Fatalf("ParseHost(%q): %v is not a 4xx HostError", host, err)
			}
			return
		}
		if !labelRE.MatchString(env) {
			t.Fatalf("ParseHost(%q) = %q, not a DNS label", host, env)
		}
		again, err := ParseHost(env+".localhost", domains)
		if err != nil || again != env {
			t.Fatalf("round trip of %q: %q, %v", env, again, err)
		}
	})
}
