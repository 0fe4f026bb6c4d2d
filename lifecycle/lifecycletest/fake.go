package lifecycletest

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// A fake Network and Launcher, for tests of the manager's state machine
// that need neither root nor a kernel: sandboxes are addresses, dev
// servers are goroutines that become ready, fail, crash or hang as the
// test says, and exit when stopped. Their timers run on the clock of the
// goroutine that launched them, so in a testing/synctest bubble every
// boot, grace period and timeout is exact on the bubble's fake clock.
//
// Everything they are asked to do goes to one event list, in order:
// "create e1", "launch e1#1", "ready e1#1", "term e1#1", "kill e1#1",
// "exit e1#1", "destroy e1", "release e1#1" (#n is the env's n-th dev
// server).

// Fake is a FakeNetwork and a FakeLauncher sharing one event list.
type Fake struct {
	Net      *FakeNetwork
	Launcher *FakeLauncher

	mu     sync.Mutex
	events []string // guarded by mu
	errs   []string // guarded by mu; misuse seen by the fakes
}

// NewFake returns a Fake whose dev servers are ready as soon as they are
// launched and exit at the first SIGTERM; set Launcher.Behave to change
// that.
func NewFake() *Fake {
	f := &Fake{}
	f.Net = &FakeNetwork{f: f, live: make(map[*FakeSandbox]bool)}
	f.Launcher = &FakeLauncher{f: f, launches: make(map[string]int)}
	return f
}

func (f *Fake) event(format string, args ...any) {
	f.mu.Lock()
	f.events = append(f.events, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *Fake) misuse(format string, args ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// Events returns every event so far, in order.
func (f *Fake) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// EventsOf returns the events whose verb is verb ("launch", "term", ...),
// without the verb, in order: EventsOf("destroy") lists the envs whose
// sandboxes were destroyed.
func (f *Fake) EventsOf(verb string) []string {
	var out []string
	for _, ev := range f.Events() {
		if v, rest, _ := strings.Cut(ev, " "); v == verb {
			out = append(out, rest)
		}
	}
	return out
}

// CheckClean fails t unless every sandbox made was destroyed (once)
// and every dev server launched has exited and was released once, after
// its sandbox was destroyed; and unless the manager used the fakes as
// lifecycle's interfaces say. Call it after the manager's Close.
func (f *Fake) CheckClean(t testing.TB) {
	t.Helper()
	f.Net.mu.Lock()
	for sb := range f.Net.live {
		t.Errorf("sandbox of %s (%s) not destroyed", sb.Name, sb.addr)
	}
	f.Net.mu.Unlock()
	for _, p := range f.Launcher.Processes() {
		p.mu.Lock()
		if !p.exitedNow() {
			t.Errorf("dev server %s still running", p)
		}
		if p.releases != 1 {
			t.Errorf("dev server %s released %d times, want once", p, p.releases)
		}
		p.mu.Unlock()
	}
	f.mu.Lock()
	for _, e := range f.errs {
		t.Error(e)
	}
	f.mu.Unlock()
}

// FakeNetwork is a lifecycle.Network whose sandboxes are addresses in
// 10.200.0.0/16, one per Create.
type FakeNetwork struct {
	f *Fake
	// CreateErr, if set, is asked at each Create; an error fails it.
	CreateErr func(name string) error

	mu   sync.Mutex
	next int                   // guarded by mu
	live map[*FakeSandbox]bool // guarded by mu
}

// FakeSandbox is a FakeNetwork's sandbox.
type FakeSandbox struct {
	Name string
	addr netip.Addr
}

// Addr implements lifecycle.Sandbox.
func (s *FakeSandbox) Addr() netip.Addr { return s.addr }

// Create implements lifecycle.Network.
func (n *FakeNetwork) Create(ctx context.Context, name string) (lifecycle.Sandbox, error) {
	if n.CreateErr != nil {
		if err := n.CreateErr(name); err != nil {
			n.f.event("create-failed %s", name)
			return nil, err
		}
	}
	n.mu.Lock()
	n.next++
	sb := &FakeSandbox{Name: name, addr: netip.AddrFrom4([4]byte{10, 200, byte(n.next >> 8), byte(n.next)})}
	n.live[sb] = true
	n.mu.Unlock()
	n.f.event("create %s", name)
	return sb, nil
}

// Destroy implements lifecycle.Network. A sandbox is destroyed once: a
// second Destroy of it is recorded as misuse (CheckClean reports it).
func (n *FakeNetwork) Destroy(s lifecycle.Sandbox) error {
	sb, ok := s.(*FakeSandbox)
	if !ok {
		n.f.misuse("Destroy of a sandbox not made by FakeNetwork: %T", s)
		return nil
	}
	n.mu.Lock()
	live := n.live[sb]
	delete(n.live, sb)
	n.mu.Unlock()
	if !live {
		n.f.misuse("sandbox of %s destroyed twice", sb.Name)
		return nil
	}
	n.f.event("destroy %s", sb.Name)
	return nil
}

// Live is how many sandboxes exist now.
func (n *FakeNetwork) Live() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.live)
}

func (n *FakeNetwork) isLive(sb *FakeSandbox) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.live[sb]
}

// FakeBehaviour is how one fake dev server behaves. The zero value is
// ready at once and exits at the first SIGTERM.
type FakeBehaviour struct {
	// LaunchErr, if set, fails the Launch (as a failed prepare step or
	// spawn would): nothing runs.
	LaunchErr error
	// Boot is how long after its launch the server becomes ready.
	Boot time.Duration
	// Hang: it never becomes ready on its own (FakeProcess.MakeReady
	// may still make it).
	Hang bool
	// ExitAtBoot, if set, is how the server exits at Boot instead of
	// becoming ready ("exit status 1").
	ExitAtBoot string
	// CrashAfter, if positive, is how long after it got ready the server
	// exits on its own, as "exit status 2".
	CrashAfter time.Duration
	// IgnoreTerm: SIGTERM does nothing, only SIGKILL ends it.
	IgnoreTerm bool
	// TermDelay is how long it takes to exit after SIGTERM.
	TermDelay time.Duration
	// Memory is what Usage reports, in bytes (-1: unknown).
	Memory int64
}

// FakeLauncher is a lifecycle.Launcher of fake dev servers.
type FakeLauncher struct {
	f *Fake
	// Behave, if set, says how the n-th dev server (from 1) launched for
	// env behaves; it is called once per Launch. Default: the zero
	// FakeBehaviour.
	Behave func(env string, n int) FakeBehaviour

	mu       sync.Mutex
	launches map[string]int // guarded by mu; per env
	procs    []*FakeProcess // guarded by mu; in launch order
}

// Launch implements lifecycle.Launcher.
func (l *FakeLauncher) Launch(ctx context.Context, req lifecycle.LaunchRequest) (lifecycle.Process, error) {
	sb, ok := req.Sandbox.(*FakeSandbox)
	if !ok || !l.f.Net.isLive(sb) || sb.Name != req.Env {
		l.f.misuse("launch of %s in a sandbox that is not its own live one (%v)", req.Env, req.Sandbox)
	}
	l.mu.Lock()
	l.launches[req.Env]++
	n := l.launches[req.Env]
	l.mu.Unlock()
	var b FakeBehaviour
	if l.Behave != nil {
		b = l.Behave(req.Env, n)
	}
	if b.LaunchErr != nil {
		l.f.event("launch-failed %s#%d", req.Env, n)
		return nil, b.LaunchErr
	}
	p := &FakeProcess{Env: req.Env, N: n, pid: 0, b: b, f: l.f, sb: sb,
		ready: make(chan struct{}), exited: make(chan struct{}), stop: make(chan struct{})}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	p.pid = 1000 + len(l.procs)
	l.mu.Unlock()
	l.f.event("launch %s", p)
	req.Output.WriteLine([]byte(fmt.Sprintf("%s booting", p)))
	go p.run()
	return p, nil
}

// Launches is how many dev servers were launched for env (failed
// Launch calls included); for "", for every env together.
func (l *FakeLauncher) Launches(env string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if env != "" {
		return l.launches[env]
	}
	n := 0
	for _, c := range l.launches {
		n += c
	}
	return n
}

// Processes returns every dev server launched, in launch order.
func (l *FakeLauncher) Processes() []*FakeProcess {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.procs)
}

// Process returns env's n-th dev server, nil if there is none.
func (l *FakeLauncher) Process(env string, n int) *FakeProcess {
	for _, p := range l.Processes() {
		if p.Env == env && p.N == n {
			return p
		}
	}
	return nil
}

// Running is how many dev servers have not exited.
func (l *FakeLauncher) Running() int {
	n := 0
	for _, p := range l.Processes() {
		select {
		case <-p.exited:
		default:
			n++
		}
	}
	return n
}

// MemoryInUse is the sum of the Memory of the dev servers still running.
func (l *FakeLauncher) MemoryInUse() int64 {
	var sum int64
	for _, p := range l.Processes() {
		select {
		case <-p.exited:
		default:
			sum += max(p.b.Memory, 0)
		}
	}
	return sum
}

// FakeProcess is a fake dev server: a lifecycle.Process.
type FakeProcess struct {
	Env string
	N   int // the env's N-th dev server

	pid    int
	b      FakeBehaviour
	f      *Fake
	sb     *FakeSandbox
	ready  chan struct{} // closed when ready
	exited chan struct{} // closed when exited
	stop   chan struct{} // closed at exit: ends run's timers

	mu        sync.Mutex
	isReady   bool   // guarded by mu
	desc      string // guarded by mu
	terms     int    // guarded by mu
	releases  int    // guarded by mu
	lowPrio   bool   // guarded by mu
	termTimer *time.Timer
}

func (p *FakeProcess) String() string { return fmt.Sprintf("%s#%d", p.Env, p.N) }

// run is the server's own life: boot, then ready or exit, then perhaps a
// crash.
func (p *FakeProcess) run() {
	if p.b.Hang {
		return
	}
	if !p.wait(p.b.Boot) {
		return
	}
	if p.b.ExitAtBoot != "" {
		p.Exit(p.b.ExitAtBoot)
		return
	}
	p.MakeReady()
	if p.b.CrashAfter > 0 && p.wait(p.b.CrashAfter) {
		p.Exit("exit status 2")
	}
}

// wait waits d, or returns false if the process exits first.
func (p *FakeProcess) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}

// MakeReady makes the server ready (WaitReady returns nil), unless it has
// exited.
func (p *FakeProcess) MakeReady() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isReady || p.exitedNow() {
		return
	}
	p.isReady = true
	close(p.ready)
	p.f.event("ready %s", p)
}

// Exit ends the server as desc says ("exit status 1"), as a crash would;
// it does nothing if it has exited already.
func (p *FakeProcess) Exit(desc string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exitLocked(desc)
}

func (p *FakeProcess) exitLocked(desc string) {
	if p.exitedNow() {
		return
	}
	if p.releases > 0 {
		p.f.misuse("dev server %s released before it exited", p)
	}
	p.desc = desc
	if p.termTimer != nil {
		p.termTimer.Stop()
	}
	close(p.stop)
	close(p.exited)
	p.f.event("exit %s", p)
}

// exitedNow reports whether the server has exited.
func (p *FakeProcess) exitedNow() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Terms is how many times the server got SIGTERM.
func (p *FakeProcess) Terms() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.terms
}

// Deprioritized reports whether Deprioritize was called.
func (p *FakeProcess) Deprioritized() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lowPrio
}

// Pid implements lifecycle.Process: 1001 for the first server launched,
// and so on.
func (p *FakeProcess) Pid() int { return p.pid }

// Exited implements lifecycle.Process.
func (p *FakeProcess) Exited() <-chan struct{} { return p.exited }

// ExitDescription implements lifecycle.Process.
func (p *FakeProcess) ExitDescription() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exitedNow() {
		return "not exited"
	}
	return p.desc
}

// WaitReady implements lifecycle.Process. It also checks that the
// manager asks at the sandbox's address.
func (p *FakeProcess) WaitReady(ctx context.Context, addr netip.AddrPort, probe lifecycle.Probe) error {
	if addr.Addr() != p.sb.addr {
		p.f.misuse("WaitReady of %s at %s, its sandbox is at %s", p, addr, p.sb.addr)
	}
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return lifecycle.ErrExited
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Terminate implements lifecycle.Process.
func (p *FakeProcess) Terminate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.terms++
	if p.exitedNow() {
		return
	}
	p.f.event("term %s", p)
	switch {
	case p.b.IgnoreTerm, p.termTimer != nil:
	case p.b.TermDelay > 0:
		p.termTimer = time.AfterFunc(p.b.TermDelay, func() { p.Exit("killed by signal terminated") })
	default:
		p.exitLocked("killed by signal terminated")
	}
}

// Kill implements lifecycle.Process.
func (p *FakeProcess) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitedNow() {
		return
	}
	p.f.event("kill %s", p)
	p.exitLocked("killed by signal killed")
}

// Deprioritize implements lifecycle.Process.
func (p *FakeProcess) Deprioritize() {
	p.mu.Lock()
	p.lowPrio = true
	p.mu.Unlock()
}

// Release implements lifecycle.Process. It must come once, after the
// exit and the sandbox's Destroy.
func (p *FakeProcess) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releases++
	switch {
	case !p.exitedNow():
		p.f.misuse("dev server %s released while running", p)
	case p.f.Net.isLive(p.sb):
		p.f.misuse("dev server %s released before its sandbox was destroyed", p)
	}
	p.f.event("release %s", p)
}

// Usage implements lifecycle.Process.
func (p *FakeProcess) Usage() (int64, time.Duration) { return p.b.Memory, 0 }

// FakeTemplate returns a prepared template for fake dev servers: any env
// name, port 3000, a 20s start timeout, a 30s idle timeout and a 5s stop
// grace.
func FakeTemplate() *lifecycle.Template {
	t := &lifecycle.Template{Name: "fake", Command: []string{"fake-dev-server"}, Port: 3000,
		Ready: lifecycle.Probe{Timeout: 20 * time.Second}, IdleTimeout: 30 * time.Second, StopGrace: 5 * time.Second}
	if err := t.Prepare(); err != nil {
		panic(err)
	}
	return t
}

// NewFakeManager runs a Manager on cfg over fake: its Network, Launcher
// and DataRoot are fake's and a temporary dir, Templates default to
// FakeTemplate's, Log to the test's. When the test ends it closes the
// manager and checks that fake is clean (CheckClean). In a
// testing/synctest bubble, call it inside the bubble: the manager's loops
// and timers then run on the bubble's clock.
func NewFakeManager(t testing.TB, cfg lifecycle.Config, fake *Fake) *lifecycle.Manager {
	t.Helper()
	cfg.Network = fake.Net
	cfg.Launcher = fake.Launcher
	cfg.DataRoot = t.TempDir()
	if len(cfg.Templates) == 0 {
		cfg.Templates = []*lifecycle.Template{FakeTemplate()}
	}
	if reflect.ValueOf(cfg.Log).IsZero() {
		cfg.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	m, err := lifecycle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		fake.CheckClean(t)
	})
	return m
}
