package gateway

import "testing"

func TestSameHost(t *testing.T) {
	for _, tc := range []struct {
		req  string
		want bool
	}{
		{"envgate.localhost", true},
		{"EnvGate.LocalHost", true},
		{"envgate.localhost:8080", true},
		{"envgate.localhost.", true},
		{"envgate.localhost.:443", true},
		{"xenvgate.localhost", false},
		{"envgate.localhost.evil", false},
		{"pr-1.localhost", false},
		{"envgate", false},
		{"", false},
	} {
		if got := sameHost(tc.req, "envgate.localhost"); got != tc.want {
			t.Errorf("sameHost(%q) = %v, want %v", tc.req, got, tc.want)
		}
	}
}
