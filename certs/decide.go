package certs

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
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
// env name (envname.Valid, after case folding: the check the gateway's
// router makes, IDNA included, so no certificate is ordered for a name
// the router would answer with 400) in front of one of domains; one
// trailing dot is ignored. domains must be lower case without a trailing
// dot (Config defaults make them so).
func EnvFromServerName(name string, domains []string) (env string, ok bool) {
	name = strings.TrimSuffix(name, ".")
	if len(name) > 253 {
		return "", false
	}
	label, rest, found := strings.Cut(name, ".")
	if !found || len(label) > envname.MaxLen {
		return "", false
	}
	for _, d := range domains {
		if len(rest) == len(d) && strings.EqualFold(rest, d) {
			return lowerEnv(label)
		}
	}
	return "", false
}

// lowerEnv folds label's ASCII letters to lower case and returns it if it
// is then an env name. Any other byte refuses it first: strings.ToLower
// would fold the Kelvin sign (U+212A) to an ASCII k.
func lowerEnv(label string) (string, bool) {
	for i := 0; i < len(label); i++ {
		if label[i] >= 0x80 {
			return "", false
		}
	}
	label = strings.ToLower(label)
	if !envname.Valid(label) {
		return "", false
	}
	return label, true
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
