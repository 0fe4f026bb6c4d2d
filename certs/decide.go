package certs

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// ErrNameNotAllowed means the server name is not <env label>.<configured domain>.
var ErrNameNotAllowed = errors.New("server name is not an env hostname under a configured domain")

// ErrIssuanceCap means the hourly cap on new ACME orders was reached.
var ErrIssuanceCap = errors.New("hourly cap on new certificate issuances reached")

// ErrPerNameAnySource means a certificate was asked for one env name while
// per-name ACME is refused because the env source allows every name
// (Config.AnyEnv).
var ErrPerNameAnySource = errors.New("per-name ACME is refused for an env source that allows every name")

// EnvFromServerName returns the env label of name when name is exactly one
// DNS label ([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?, case-folded) in front of one
// of domains; one trailing dot is ignored. domains must be lower case without
// a trailing dot (Config defaults make them so).
func EnvFromServerName(name string, domains []string) (env string, ok bool) {
	name = strings.TrimSuffix(name, ".")
	if len(name) > 253 {
		return "", false
	}
	label, rest, found := strings.Cut(name, ".")
	if !found || !validLabel(label) {
		return "", false
	}
	for _, d := range domains {
		if len(rest) == len(d) && strings.EqualFold(rest, d) {
			return strings.ToLower(label), true
		}
	}
	return "", false
}

func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// issuanceCap is a sliding one-hour window over new ACME orders. It exists
// because a burst of allowed-but-new env names (a script creating branches,
// a scanner guessing names an "any" source allows) would otherwise spend the
// CA's weekly budget for the whole registered domain in minutes.
type issuanceCap struct {
	max    int // < 0: no cap
	window time.Duration
	log    zerolog.Logger

	mu       sync.Mutex
	issued   []time.Time // start times of orders in the window, oldest first
	lastWarn time.Time
}

func newIssuanceCap(max int, log zerolog.Logger) *issuanceCap {
	return &issuanceCap{max: max, window: time.Hour, log: log}
}

// take reserves one issuance at now, or reports false (and warns at most
// once a minute) when the window is full.
func (c *issuanceCap) take(now time.Time, name string) bool {
	if c.max < 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cut := 0
	for cut < len(c.issued) && now.Sub(c.issued[cut]) >= c.window {
		cut++
	}
	c.issued = c.issued[cut:]
	if len(c.issued) < c.max {
		c.issued = append(c.issued, now)
		return true
	}
	if now.Sub(c.lastWarn) >= time.Minute {
		c.lastWarn = now
		c.log.Warn().Str("server_name", name).Int("max_per_hour", c.max).
			Time("next_slot", c.issued[0].Add(c.window)).
			Msg("certificate issuance cap reached; refusing new certificates until a slot frees (tls.max_issuances_per_hour)")
	}
	return false
}
