package certs

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/envgate/envgate/lifecycle/cluster/sharedfile"
	"github.com/rs/zerolog"
)

func TestRegisteredDomain(t *testing.T) {
	for name, want := range map[string]string{
		"feature-x.dev.example.com":  "example.com",
		"*.dev.example.com":          "example.com",
		"X.Dev.Example.COM.":         "example.com",
		"a.dev.example.co.uk":        "example.co.uk",
		"pr-1.dev.envgate.test":      "envgate.test",
		"app.user.github.io":         "user.github.io", // a private suffix: its own budget at Let's Encrypt
		"example.com":                "example.com",
		"com":                        "com",
		"feature.preview.example.de": "example.de",
	} {
		if got := registeredDomain(name); got != want {
			t.Errorf("registeredDomain(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestOrderLedger(t *testing.T) {
	dir := t.TempDir()
	var logs lockedBuffer
	l, err := newOrderLedger(dir, 3, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	steps := []struct {
		at   time.Duration
		name string
		want bool
	}{
		{0, "a.dev.example.com", true},
		{day, "b.dev.example.com", true},
		{2 * day, "*.staging.example.com", true}, // same registered domain
		{3 * day, "c.dev.example.com", false},    // a week holds 3 already
		{3 * day, "a.dev.example.org", true},     // another registered domain has its own
		{7 * day, "d.dev.example.com", true},     // the first order left the window
		{7*day + time.Second, "e.dev.example.com", false},
	}
	for i, s := range steps {
		if got := l.take(context.Background(), t0.Add(s.at), s.name); got != s.want {
			t.Fatalf("step %d (%s at %v): take = %v, want %v", i, s.name, s.at, got, s.want)
		}
	}
	if n := logs.Count("weekly certificate order cap reached"); n != 2 {
		t.Fatalf("%d warnings, want 2 (one per refusal more than a minute apart)", n)
	}

	// A new ledger on the same state dir (a restart) counts the same.
	l2, err := newOrderLedger(dir, 3, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := l2.count(t0.Add(7*day+time.Second), "x.example.com"); err != nil || n != 3 {
		t.Fatalf("after a restart: %d orders (%v), want 3", n, err)
	}
	if l2.take(context.Background(), t0.Add(7*day+2*time.Second), "f.dev.example.com") {
		t.Fatal("a restart reset the weekly cap")
	}
	if info, err := os.Stat(filepath.Join(dir, ordersFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v, %v; want mode 600", info, err)
	}

	// A damaged file stops the start, and refuses orders, rather than
	// counting from zero.
	if err := os.WriteFile(filepath.Join(dir, ordersFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l2.take(context.Background(), t0.Add(30*day), "g.dev.example.com") {
		t.Fatal("an order was allowed on a damaged ledger")
	}
	if _, err := newOrderLedger(dir, 3, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "remove it to reset") {
		t.Fatalf("newOrderLedger on a damaged file: %v; want an error saying what to do", err)
	}

	unlimited, err := newOrderLedger(t.TempDir(), -1, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if !unlimited.take(context.Background(), t0, "x.example.com") {
			t.Fatal("a cap of -1 refused")
		}
	}
}

// TestOrderLedgerLockHeld: while another holder (another node, or a
// hung one) keeps the ledger's lock, take waits only as long as its
// context (the order's deadline) and then refuses, saying why; once the
// lock is let go it records the order.
func TestOrderLedgerLockHeld(t *testing.T) {
	dir := t.TempDir()
	var logs lockedBuffer
	l, err := newOrderLedger(dir, 3, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := sharedfile.Lock(context.Background(), filepath.Join(dir, ordersLock))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if l.take(ctx, time.Now(), "a.dev.example.com") {
		t.Fatal("an order was recorded while another holder had the ledger's lock")
	}
	if logs.Count("cannot lock the order ledger") != 1 || logs.Count(sharedfile.ErrHeld.Error()) != 1 {
		t.Fatalf("the refusal does not say the lock was held:\n%s", logs.String())
	}
	unlock()
	if !l.take(context.Background(), time.Now(), "a.dev.example.com") {
		t.Fatalf("refused once the lock was let go:\n%s", logs.String())
	}
	if n, err := l.count(time.Now(), "a.dev.example.com"); err != nil || n != 1 {
		t.Fatalf("the ledger records %d orders (%v), want 1", n, err)
	}
}

// randomEnvName is a valid env label under testDomain that no test has
// used, as a scanner trying names would send.
func randomEnvName(rng *rand.Rand) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 3+rng.IntN(20))
	for i := range b {
		b[i] = chars[rng.IntN(len(chars))]
	}
	return "r" + string(b) + "." + testDomain
}

// Issue 13, test 7 (first half): with an env source that allows every
// name, 100 handshakes for random names place no ACME order. Config
// validation refuses per-name ACME for such a source; here it is bypassed
// (AnyEnv set after New) to show that the certificate decision refuses on
// its own.
func TestACMEAnySourcePerNameOrdersNothing(t *testing.T) {
	g := newTestGateway(t)
	p := startPebble(t, g.httpPort, g.tlsPort)
	ordersSent := countACMEOrders(t)
	cfg := acmeTestConfig(p, g, t.TempDir())
	cfg.AnyEnv = true
	if err := cfg.Validate(); !errors.Is(err, errPerNameAnySource) {
		t.Fatalf("Validate: %v; want the per-name refusal", err)
	}
	cfg.AnyEnv = false
	m := newTestManager(t, cfg, nil) // nil: every valid label allowed, as source any
	m.cfg.AnyEnv = true
	g.use(m)
	g.serve(t)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	for range 100 {
		sni := randomEnvName(rng)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := handshake(ctx, g.tlsAddr, sni, p.roots)
		cancel()
		if err == nil {
			t.Fatalf("handshake for %q succeeded; want refusal", sni)
		}
	}
	if got := p.orders(); got != 0 {
		t.Fatalf("pebble saw %d orders", got)
	}
	if got := ordersSent.Load(); got != 0 {
		t.Fatalf("the ACME client sent %d new-order requests", got)
	}
	if err := m.decide(context.Background(), "feature-x."+testDomain); !errors.Is(err, ErrPerNameAnySource) {
		t.Fatalf("decide: %v; want ErrPerNameAnySource", err)
	}
}

// Issue 13, test 7 (second half): what source any is allowed with, one
// wildcard through DNS-01: one order, then 100 random names are served
// that certificate and order nothing.
func TestACMEAnySourceWildcardOrdersOnce(t *testing.T) {
	dnsSrv := pebbletest.StartDNS(t, "envgate.test")
	g := newTestGateway(t)
	p := startPebbleWithDNS(t, g.httpPort, g.tlsPort, dnsSrv.Addr)
	cfg := acmeTestConfig(p, g, t.TempDir())
	cfg.AnyEnv = true
	cfg.Wildcard = &WildcardConfig{
		Nameserver:         dnsSrv.Addr,
		TSIGKeyName:        pebbletest.TSIGKey,
		TSIGSecret:         pebbletest.TSIGSecret,
		Resolvers:          []string{dnsSrv.Addr},
		PropagationTimeout: -1, // see TestACMEWildcardDNS01
	}
	m := newTestManager(t, cfg, nil)
	g.use(m)
	g.serve(t)

	serial := awaitCertificate(t, g.tlsAddr, "first."+testDomain, p.roots).SerialNumber.String()
	before := p.orders()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for range 100 {
		sni := randomEnvName(rng)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		leaf, err := handshake(ctx, g.tlsAddr, sni, p.roots)
		cancel()
		if err != nil || leaf.SerialNumber.String() != serial {
			t.Fatalf("%s: %v; want the wildcard", sni, err)
		}
	}
	if got := p.orders() - before; got != 0 {
		t.Fatalf("pebble saw %d orders after the wildcard", got)
	}
	if n, err := m.acme.weekly.count(time.Now(), testDomain); err != nil || n != before {
		t.Fatalf("weekly ledger holds %d orders (%v), pebble saw %d", n, err, before)
	}
}

// Issue 13, test 7 (restart): the weekly cap is counted per registered
// domain in the state dir, so a new manager (a restarted gateway) refuses
// what the old one would have, while another registered domain still has
// its budget.
func TestACMEWeeklyCapSurvivesRestart(t *testing.T) {
	const other = "dev.other.test"
	g := newTestGateway(t)
	p := startPebble(t, g.httpPort, g.tlsPort)
	stateDir := t.TempDir()
	cfg := acmeTestConfig(p, g, stateDir)
	cfg.Domains = []string{testDomain, other}
	cfg.MaxIssuancesPerHour = -1
	cfg.MaxOrdersPerWeek = 2
	log, logs := testLogger(t)
	m, err := New(cfg, testAllow(new(atomic.Int64)), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	g.use(m)
	g.serve(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, env := range []string{"ok-a", "ok-b"} {
		if _, err := handshake(ctx, g.tlsAddr, env+"."+testDomain, p.roots); err != nil {
			t.Fatalf("%s: %v", env, err)
		}
	}
	if _, err := handshake(ctx, g.tlsAddr, "ok-c."+testDomain, p.roots); err == nil {
		t.Fatal("a third certificate for envgate.test past a weekly cap of 2")
	}
	if n := logs.Count("weekly certificate order cap reached"); n != 1 {
		t.Fatalf("cap warning logged %d times, want 1", n)
	}
	orders := p.orders()

	_ = m.Close()
	m2 := newTestManager(t, cfg, testAllow(new(atomic.Int64)))
	g.use(m2)
	for _, env := range []string{"ok-c", "ok-d"} {
		if _, err := handshake(ctx, g.tlsAddr, env+"."+testDomain, p.roots); err == nil {
			t.Fatalf("%s got a certificate after a restart past a weekly cap of 2", env)
		}
	}
	if got := p.orders() - orders; got != 0 {
		t.Fatalf("pebble saw %d orders past the cap after the restart", got)
	}
	// Stored certificates are still served, and other.test has its own budget.
	if _, err := handshake(ctx, g.tlsAddr, "ok-a."+testDomain, p.roots); err != nil {
		t.Fatalf("stored certificate after the restart: %v", err)
	}
	leaf, err := handshake(ctx, g.tlsAddr, "ok-e."+other, p.roots)
	if err != nil || !slices.Equal(leaf.DNSNames, []string{"ok-e." + other}) {
		t.Fatalf("ok-e.%s: %v; want a certificate (another registered domain)", other, err)
	}
	b, _ := os.ReadFile(filepath.Join(stateDir, ordersFile))
	for _, want := range []string{`"envgate.test"`, `"other.test"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("ledger lacks %s:\n%s", want, b)
		}
	}
	t.Logf("ledger after the run:\n%s", b)
}
