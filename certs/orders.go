package certs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/envgate/envgate/lifecycle/cluster/sharedfile"
	"github.com/rs/zerolog"
	"golang.org/x/net/publicsuffix"
)

// ErrWeeklyCap means the weekly cap on new ACME orders for the name's
// registered domain was reached.
var ErrWeeklyCap = errors.New("weekly cap on new certificate orders for the registered domain reached")

const (
	// ordersFile, under StateDir, records the new ACME orders of the last
	// week per registered domain; ordersLock serialises its readers and
	// writers across processes (a gateway and its successor during a
	// handoff, `envgate trust`).
	ordersFile = "acme-orders.json"
	ordersLock = "acme-orders.lock"

	orderWindow = 7 * 24 * time.Hour
)

// orderLedger is the weekly cap: new ACME orders in any sliding week,
// counted per registered domain (public suffix plus one label, the unit
// of Let's Encrypt's "certificates per registered domain" limit), kept in
// a file so that a restart does not give a stranger a fresh budget. It is
// separate from the hourly issuanceCap, which only smooths bursts and
// lives in memory.
//
// The file is read and rewritten under an flock at every order, not
// cached: orders are rare (a handful a day), and two processes sharing a
// state dir (a handoff) must not each count from their own stale copy.
type orderLedger struct {
	max  int // < 0: no cap
	path string
	lock string
	log  zerolog.Logger

	mu       sync.Mutex // serialises take within this process; guards lastWarn
	lastWarn time.Time
}

// ledgerFile is the document in ordersFile.
type ledgerFile struct {
	Version int `json:"version"`
	// Orders holds, per registered domain, the times of new orders within
	// the last week, oldest first.
	Orders map[string][]time.Time `json:"orders"`
}

const ledgerVersion = 1

// newOrderLedger makes the ledger in stateDir and reads it once, so that a
// damaged file stops the gateway at start rather than at its first order.
func newOrderLedger(stateDir string, max int, log zerolog.Logger) (*orderLedger, error) {
	l := &orderLedger{
		max:  max,
		path: filepath.Join(stateDir, ordersFile),
		lock: filepath.Join(stateDir, ordersLock),
		log:  log,
	}
	if max < 0 {
		return l, nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: order ledger: %w", err)
	}
	if _, err := l.read(); err != nil {
		return nil, err
	}
	return l, nil
}

// registeredDomain is the public suffix of name plus one label
// (dev.example.com -> example.com, x.dev.example.co.uk -> example.co.uk);
// a name that has none (a bare suffix) counts as itself.
func registeredDomain(name string) string {
	name = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(name, "*."), "."))
	rd, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return rd
}

// take records a new order for name at now, or reports false (with a
// warning at most once a minute) when its registered domain already had
// max orders in the last week. Failing to read or write the file refuses:
// an order that is not recorded would not count after a restart. So does
// ctx ending (the order's own deadline) while another holder, on this
// node or another, keeps the file's lock.
func (l *orderLedger) take(ctx context.Context, now time.Time, name string) bool {
	if l.max < 0 {
		return true
	}
	rd := registeredDomain(name)
	l.mu.Lock()
	defer l.mu.Unlock()
	// The same lock as every node of a cluster (state_dir is shared).
	unlock, err := sharedfile.Lock(ctx, l.lock)
	if err != nil {
		l.log.Error().Err(err).Str("server_name", name).Msg("certificate refused: cannot lock the order ledger")
		return false
	}
	defer unlock()
	lf, err := l.read()
	if err != nil {
		l.log.Error().Err(err).Str("server_name", name).Msg("certificate refused: cannot read the order ledger")
		return false
	}
	for d, times := range lf.Orders {
		kept := slices.DeleteFunc(times, func(t time.Time) bool { return now.Sub(t) >= orderWindow })
		if len(kept) == 0 {
			delete(lf.Orders, d)
		} else {
			lf.Orders[d] = kept
		}
	}
	times := lf.Orders[rd]
	if len(times) >= l.max {
		if now.Sub(l.lastWarn) >= time.Minute {
			l.lastWarn = now
			l.log.Warn().Str("server_name", name).Str("registered_domain", rd).Int("max_per_week", l.max).
				Time("next_slot", times[0].Add(orderWindow)).
				Msg("weekly certificate order cap reached; refusing new certificates for this registered domain until a slot frees (tls.max_orders_per_week)")
		}
		return false
	}
	lf.Orders[rd] = append(times, now.UTC())
	if err := l.write(lf); err != nil {
		l.log.Error().Err(err).Str("server_name", name).Msg("certificate refused: cannot record the order")
		return false
	}
	return true
}

// count reports the orders recorded for name's registered domain within
// the week before now.
func (l *orderLedger) count(now time.Time, name string) (int, error) {
	lf, err := l.read()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range lf.Orders[registeredDomain(name)] {
		if now.Sub(t) < orderWindow {
			n++
		}
	}
	return n, nil
}

// read reads the ledger; a missing file is an empty one.
func (l *orderLedger) read() (ledgerFile, error) {
	lf := ledgerFile{Version: ledgerVersion, Orders: map[string][]time.Time{}}
	b, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return lf, nil
	}
	if err != nil {
		return lf, fmt.Errorf("certs: order ledger: %w", err)
	}
	if err := json.Unmarshal(b, &lf); err != nil || lf.Version != ledgerVersion {
		if err == nil {
			err = fmt.Errorf("version %d, want %d", lf.Version, ledgerVersion)
		}
		return lf, fmt.Errorf("certs: order ledger %s: %w (fix it, or remove it to reset the weekly count of ACME orders)", l.path, err)
	}
	if lf.Orders == nil {
		lf.Orders = map[string][]time.Time{}
	}
	return lf, nil
}

func (l *orderLedger) write(lf ledgerFile) error {
	b, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("certs: order ledger: %w", err)
	}
	if err := writeFileAtomic(l.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("certs: order ledger: %w", err)
	}
	return nil
}
