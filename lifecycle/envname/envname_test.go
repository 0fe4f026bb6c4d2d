package envname

import (
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/idna"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"main", true},
		{"feature-x", true},
		{"0", true},
		{"a", true},
		{"pr-12", true},
		{"db--feature-x", true}, // "--" is fine outside the IDNA prefix
		{strings.Repeat("a", 63), true},
		{"xn--bcher-kva", true},  // bücher
		{"xn--mnchen-3ya", true}, // münchen

		{"", false},
		{strings.Repeat("a", 64), false},
		{"Main", false},
		{"MAIN", false},
		{"-a", false},
		{"a-", false},
		{"-", false},
		{"a_b", false},
		{"a.b", false},
		{"a b", false},
		{"a/b", false},
		{"fé", false},
		{"a\x00", false},
		{"xn--", false},           // no payload
		{"xn--a", false},          // does not decode
		{"xn--abc", false},        // decodes to ASCII only: not an A-label
		{"xn--bcher-kva-", false}, // trailing '-'
		{"xn--bcher-KVA", false},  // upper case
		{"xn--ab-m1t", false},     // a\u200db: a joiner out of context
		{"xn----dha", false},      // "ü-": the U-label ends in '-'
		{"xn--tda1219j", false},   // "ﬀü": a rune IDNA disallows
		{"xn--" + strings.Repeat("a", 59), false},
	} {
		if got := Valid(tc.s); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

var ldhRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// FuzzValid checks Valid against a plain reading of its contract: an
// accepted name is an LDH label; an LDH label that is not an A-label is
// accepted; an accepted A-label decodes to Unicode and encodes back to
// itself.
func FuzzValid(f *testing.F) {
	for _, s := range []string{
		"main", "feature-x", "db--x", strings.Repeat("a", 63), strings.Repeat("a", 64),
		"xn--bcher-kva", "xn--", "xn--a", "xn--abc", "xn--ab-m1t", "xn----dha", "xn--tda1219j", "XN--BCHER-KVA",
		"-a", "a-", "a_b", "fé", "", "\xff", "a.b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := Valid(s)
		ldh := ldhRE.MatchString(s)
		switch {
		case ok && !ldh:
			t.Fatalf("Valid(%q) accepts a name that is not an LDH label", s)
		case ldh && !strings.HasPrefix(s, "xn--") && !ok:
			t.Fatalf("Valid(%q) refuses an LDH label that is not an A-label", s)
		case ok && strings.HasPrefix(s, "xn--"):
			u, err := idna.Punycode.ToUnicode(s)
			if err != nil || u == s {
				t.Fatalf("Valid(%q) accepts an A-label that does not decode: %q, %v", s, u, err)
			}
			if a, err := idna.Registration.ToASCII(u); err != nil || a != s {
				t.Fatalf("Valid(%q) accepts an A-label that does not encode back: %q, %v", s, a, err)
			}
		}
	})
}
