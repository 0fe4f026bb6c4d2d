package gateway_test

import (
	"testing"

	"github.com/envgate/envgate/gateway"
)

// portSet names, per env, the ports of its template.
type portSet map[string][]string

func (p portSet) HasPort(env, port string) bool {
	for _, n := range p[env] {
		if n == port {
			return true
		}
	}
	return false
}

func TestSplitPort(t *testing.T) {
	ports := portSet{"feature-x": {"api", "db"}, "a--b": {"api"}, "xn--bcher-kva": {"web"}}
	for _, tc := range []struct {
		label, sep, env, port string
	}{
		{"feature-x", "--", "feature-x", ""},
		{"api--feature-x", "--", "feature-x", "api"},
		{"db--feature-x", "--", "feature-x", "db"},
		{"web--feature-x", "--", "web--feature-x", ""},       // not a port of feature-x: an env name
		{"api--a--b", "--", "a--b", "api"},                   // env names may contain the separator
		{"a--b", "--", "a--b", ""},                           // "a" is no port of "b"
		{"web--xn--bcher-kva", "--", "xn--bcher-kva", "web"}, // IDNA env
		{"xn--bcher-kva", "--", "xn--bcher-kva", ""},
		{"--feature-x", "--", "--feature-x", ""},
		{"api--", "--", "api--", ""},
		{"api-x-feature-x", "-x-", "feature-x", "api"},
		{"api--feature-x", "-x-", "api--feature-x", ""},
	} {
		env, port := gateway.SplitPort(tc.label, tc.sep, ports)
		if env != tc.env || port != tc.port {
			t.Errorf("SplitPort(%q, %q) = %q, %q; want %q, %q", tc.label, tc.sep, env, port, tc.env, tc.port)
		}
	}
	if env, port := gateway.SplitPort("api--feature-x", "--", nil); env != "api--feature-x" || port != "" {
		t.Errorf("nil namer split the label: %q, %q", env, port)
	}
}
