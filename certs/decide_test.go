package certs

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/rs/zerolog"
)

func TestEnvFromServerName(t *testing.T) {
	domains := []string{"dev.example.com", "localhost"}
	long := strings.Repeat("a", 63)
	tests := []struct {
		name    string
		wantEnv string
		wantOK  bool
	}{
		{"feature-x.dev.example.com", "feature-x", true},
		{"Feature-X.DEV.Example.com", "feature-x", true},
		{"feature-x.dev.example.com.", "feature-x", true},
		{"foo.localhost", "foo", true},
		{"a.localhost", "a", true},
		{"0.localhost", "0", true},
		{long + ".localhost", long, true},
		{long + "a.localhost", "", false},
		{"feature-x.dev.example.com..", "", false},
		{"dev.example.com", "", false},
		{"localhost", "", false},
		{".localhost", "", false},
		{"a.b.localhost", "", false},
		{"-x.localhost", "", false},
		{"x-.localhost", "", false},
		{"x_y.localhost", "", false},
		{"x y.localhost", "", false},
		{"xn--bcher-kva.localhost", "xn--bcher-kva", true},
		{"XN--BCHER-KVA.localhost", "xn--bcher-kva", true},
		// LDH labels the router answers with 400 (not IDNA A-labels):
		// no certificate for them either.
		{"xn--.localhost", "", false},
		{"xn--a.localhost", "", false},
		{"xn--abc.localhost", "", false},
		{"xn--ab-m1t.localhost", "", false},
		{"XN--A.localhost", "", false},
		{"\u212aey.localhost", "", false}, // Kelvin sign: lower-cases to an ASCII k
		{"bücher.localhost", "", false},
		{"foo.example.com", "", false},
		{"foo.xdev.example.com", "", false},
		{"foo.dev.example.com.evil", "", false},
		{"", "", false},
		{"*.localhost", "", false},
	}
	for _, tt := range tests {
		env, ok := EnvFromServerName(tt.name, domains)
		if env != tt.wantEnv || ok != tt.wantOK {
			t.Errorf("EnvFromServerName(%q) = %q, %v; want %q, %v", tt.name, env, ok, tt.wantEnv, tt.wantOK)
		}
	}
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func FuzzEnvFromServerName(f *testing.F) {
	for _, s := range []string{"feature-x.dev.example.com", "a.localhost.", "-a.localhost", "A.B.localhost", "\x00.localhost",
		"xn--bcher-kva.localhost", "xn--a.localhost", "XN--ABC.dev.example.com", "\u212a.localhost"} {
		f.Add(s)
	}
	domains := []string{"dev.example.com", "localhost"}
	f.Fuzz(func(t *testing.T, name string) {
		env, ok := EnvFromServerName(name, domains)
		if !ok {
			if env != "" {
				t.Fatalf("env %q with ok=false", env)
			}
			return
		}
		if !labelRE.MatchString(env) {
			t.Fatalf("%q gave env %q, not a lower-case DNS label", name, env)
		}
		if !envname.Valid(env) {
			t.Fatalf("%q gave env %q, which the router refuses", name, env)
		}
		rest := strings.ToLower(strings.TrimSuffix(name, "."))
		if rest != env+".dev.example.com" && rest != env+".localhost" {
			t.Fatalf("%q gave env %q, which is not its first label under a domain", name, env)
		}
	})
}

func TestIssuanceCap(t *testing.T) {
	var logs lockedBuffer
	c := newIssuanceCap(3, zerolog.New(&logs))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true},
		{time.Minute, true},
		{2 * time.Minute, true},
		{3 * time.Minute, false}, // window full
		{3*time.Minute + time.Second, false},
		{60 * time.Minute, true}, // the first slot expired
		{60*time.Minute + time.Second, false},
		{61 * time.Minute, true}, // the second expired
		{62 * time.Minute, true}, // the third expired
		{62 * time.Minute, false},
	}
	for i, s := range steps {
		if got := c.take(t0.Add(s.at), "x.example.com"); got != s.want {
			t.Fatalf("step %d at %v: take = %v, want %v", i, s.at, got, s.want)
		}
	}
	// Refusals at 3m and 3m1s are within a minute: one warning; 60m1s and 62m are more.
	if n := logs.Count("issuance cap reached"); n != 3 {
		t.Fatalf("%d warnings, want 3 (at most one a minute)", n)
	}
	unlimited := newIssuanceCap(-1, zerolog.Nop())
	for range 1000 {
		if !unlimited.take(t0, "x") {
			t.Fatal("a cap of -1 refused")
		}
	}
}

// BenchmarkEnvFromServerName: it runs on every handshake that misses the
// certificate cache, including every refused one.
func BenchmarkEnvFromServerName(b *testing.B) {
	domains := []string{"dev.example.com", "localhost"}
	for b.Loop() {
		if _, ok := EnvFromServerName("Feature-X.dev.example.com.", domains); !ok {
			b.Fatal("refused")
		}
	}
}
