package gateway

import (
	"net"
	"net/http"
	"strings"

	"github.com/envgate/envgate/lifecycle/envname"
)

// HostError says why a Host header names no env. Status is the HTTP status
// to answer with.
type HostError struct {
	Host   string
	Status int
	Reason string
}

func (e *HostError) Error() string { return "gateway: host " + quote(e.Host) + ": " + e.Reason }

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}

// ParseHost returns the env named by host, which must be exactly one env
// name (envname.Valid, after case folding) in front of one of domains. A port (see validPort) and one trailing dot are stripped
// first. Domains must be lowercase without a trailing dot.
func ParseHost(host string, domains []string) (string, error) {
	bad := func(status int, reason string) (string, error) {
		return "", &HostError{Host: host, Status: status, Reason: reason}
	}
	if host == "" {
		return bad(http.StatusBadRequest, "missing Host header")
	}
	if len(host) > 300 {
		return bad(http.StatusBadRequest, "too long")
	}
	h := host
	if strings.HasPrefix(h, "[") || net.ParseIP(h) != nil {
		return bad(http.StatusBadRequest, "an IP address names no environment; use <env>."+domains[0])
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if !validPort(h[i+1:]) {
			return bad(http.StatusBadRequest, "the port must be a number from 1 to 65535")
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	h = lowerASCII(h)
	if net.ParseIP(h) != nil {
		return bad(http.StatusBadRequest, "an IP address names no environment; use <env>."+domains[0])
	}
	for _, d := range domains {
		label, ok := strings.CutSuffix(h, "."+d)
		if !ok {
			continue
		}
		if label == "" || strings.Contains(label, ".") {
			return bad(http.StatusNotFound, "want exactly one label before ."+d)
		}
		if !envname.Valid(label) {
			return bad(http.StatusBadRequest, "env names are 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")
		}
		return label, nil
	}
	if len(domains) == 1 {
		return bad(http.StatusNotFound, "not under the gateway's domain "+domains[0])
	}
	return bad(http.StatusNotFound, "not under any of the gateway's domains "+strings.Join(domains, ", "))
}

// validPort reports whether port, what follows a Host's last ':', is a
// TCP port: decimal digits (leading zeros allowed) for a number from 1 to
// 65535, or nothing at all. RFC 3986 section 3.2.3 allows the empty port
// and says it means the scheme's default, as Go's net/http and URL
// parsers take it: "a.localhost:" is a.localhost. Port 0 and numbers past
// 65535 name no port a client could have connected to.
func validPort(port string) bool {
	if port == "" {
		return true
	}
	n := 0
	for i := 0; i < len(port); i++ {
		c := port[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return false
		}
	}
	return n > 0
}

// lowerASCII folds A-Z to a-z and leaves every other byte as it is, so a
// non-ASCII host stays non-ASCII and is refused: strings.ToLower would
// fold the Kelvin sign (U+212A) to an ASCII k, and route a host that the
// certificate layer refuses (certs.EnvFromServerName). It allocates only
// when there is something to fold.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
