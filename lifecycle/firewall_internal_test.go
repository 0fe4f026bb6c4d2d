package lifecycle

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestTemplatePolicy(t *testing.T) {
	of := TemplatePolicy([]*Template{{Name: "pr", Match: "pr-*"}, {Name: "web", Match: "*"}})
	for name, want := range map[string]string{
		"pr-12":           "pr",
		"main":            "web",
		spareMarker + "3": "", // a warm spare: no template yet
	} {
		if got := of(name); got != want {
			t.Errorf("policy of %q = %q, want %q", name, got, want)
		}
	}
}

// With the firewall off, every env start says so.
func TestSandboxPolicyOffWarns(t *testing.T) {
	var buf bytes.Buffer
	p := &SandboxPolicy{Log: zerolog.New(&buf)}
	for range 2 {
		if err := p.attach(nil, "main"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), `"level":"warn"`); n != 2 {
		t.Errorf("%d warnings for 2 starts:\n%s", n, buf.String())
	}
	var none *SandboxPolicy
	if err := none.attach(nil, "main"); err != nil {
		t.Errorf("no policy: %v", err)
	}
}
