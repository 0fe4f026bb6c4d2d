// Package envname is the one validator of env names, an input that comes
// from outside (Host headers, TLS server names, URLs, branch names,
// directory entries, config files): an env name is one lowercase DNS
// label that the gateway routes, the certificate layer may order a
// certificate for, and an env source may allow. It also owns the mapping
// from git branches to such labels.
//
// It is pure string logic: no I/O, no knowledge of environments' state.
// Whoever parses an outside name asks Valid before any other work; netns
// keeps its own, separate rules for the kernel names it derives.
package envname

import (
	"strings"

	"golang.org/x/net/idna"
)

// MaxLen is the longest env name: one DNS label (RFC 1035 section 2.3.4).
const MaxLen = 63

// Valid reports whether s is an env name: a lowercase LDH DNS label (1-63
// of a-z, 0-9 and '-', not starting or ending with '-') that, if it is an
// IDNA A-label (xn--), decodes and encodes back to itself under IDNA's
// registration profile. Every name the gateway routes, a certificate is
// ordered for, or a source allows passes Valid, so a name one of them
// accepts is never refused by another.
func Valid(s string) bool {
	if !ldh(s) {
		return false
	}
	if strings.HasPrefix(s, "xn--") {
		// A valid A-label decodes, and encodes back to itself under the
		// registration profile.
		u, err := idna.Punycode.ToUnicode(s)
		if err != nil || u == s {
			return false
		}
		a, err := idna.Registration.ToASCII(u)
		if err != nil || a != s {
			return false
		}
	}
	return true
}

// ldh reports whether s is 1-63 of a-z, 0-9 and '-', not starting or
// ending with '-'.
func ldh(s string) bool {
	if len(s) == 0 || len(s) > MaxLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
