package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/netns"
)

// ColdQuadsResult is what `benchtool coldquads` prints: per mode, per
// quad (or round), the mean over the mode's two slots of each slot's
// TTFB p50, in ms, in quad order.
type ColdQuadsResult struct {
	Quads   int                  `json:"quads"`
	Per     int                  `json:"per"`
	Pairing string               `json:"pairing"`
	TTFB    map[string][]float64 `json:"ttfb_ms"`
	Seconds float64              `json:"seconds"`
}

// coldTarget is one gateway of `benchtool coldquads`: its mode's name,
// the network namespace it listens in and its address there.
type coldTarget struct {
	mode  string
	ns    string // the network namespace's path
	addr  string
	admin string // the gateway's admin socket; "" for none
}

// runColdQuads runs the cold starts of loadtest/bench's §1c from one
// process: the modes take turns in palindromic quads of slots of per
// fresh envs one after another (alternate pairing), or every mode's slot
// at once, two per round (concurrent). Each gateway listens in a network
// namespace of its own; the process dials each from a socket made in
// that namespace, so nothing but the requests themselves runs between
// two starts: `benchtool cold` run once per slot cost a process start
// (nsenter, the Go runtime) just before each slot's first start, which
// made that start about twice as slow as the next ones and widened the
// pairs.
func runColdQuads(args []string) (*ColdQuadsResult, error) {
	fs := flag.NewFlagSet("coldquads", flag.ContinueOnError)
	quads := fs.Int("quads", 450, "quads (alternate) or rounds (concurrent)")
	per := fs.Int("per", 3, "cold starts per slot")
	pairing := fs.String("pairing", "alternate", "alternate (palindromic quads) or concurrent (every mode's slot at once)")
	hosts := fs.String("hosts", "c{{.Mode}}{{.Quad}}y{{.Slot}}x{{.I}}.localhost", "hostname template over {{.Mode}}, {{.Quad}}, {{.Slot}} and {{.I}}")
	path := fs.String("path", "/healthz", "request path")
	timeout := fs.Duration("timeout", 30*time.Second, "per-request timeout")
	batch := fs.Int("batch", 0, "after every BATCH quads, stop the envs they started through each gateway's admin socket and wait until the CPUs are quiet (0: never)")
	quiet := fs.Float64("quiet", 0.2, "with -batch: the busy share of the CPUs, over 100 ms, under which the machine counts as quiet")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *quads < 1 || *per < 1 {
		return nil, errors.New("coldquads: -quads and -per must be at least 1")
	}
	if *pairing != "alternate" && *pairing != "concurrent" {
		return nil, fmt.Errorf("coldquads: -pairing %q: want alternate or concurrent", *pairing)
	}
	namer, err := template.New("hosts").Option("missingkey=error").Parse(*hosts)
	if err != nil {
		return nil, fmt.Errorf("coldquads: -hosts: %w", err)
	}
	targets, err := parseColdTargets(fs.Args())
	if err != nil {
		return nil, err
	}
	if *batch > 0 && slices.ContainsFunc(targets, func(t coldTarget) bool { return t.admin == "" }) {
		return nil, errors.New("coldquads: -batch needs every target's admin socket (MODE=NETNS,ADDR,ADMIN)")
	}
	clients := make([]*http.Client, len(targets))
	for i, t := range targets {
		clients[i] = nsClient(t, *timeout)
	}
	res := &ColdQuadsResult{Quads: *quads, Per: *per, Pairing: *pairing, TTFB: map[string][]float64{}}
	started := make([][]string, len(targets)) // per target, the envs since the last batch
	// slot runs target i's slot k of quad q and returns its TTFB p50 (ms).
	slot := func(i, q, k int) (float64, error) {
		ttfb := make([]time.Duration, 0, *per)
		for n := range *per {
			var b strings.Builder
			if err := namer.Execute(&b, struct{ Mode, Quad, Slot, I any }{targets[i].mode, q, k, n}); err != nil {
				return 0, fmt.Errorf("coldquads: -hosts: %w", err)
			}
			started[i] = append(started[i], envOf(b.String()))
			a := get(context.Background(), clients[i], b.String(), *path)
			if !a.ok() {
				return 0, fmt.Errorf("coldquads: mode %s, %s: %s (status %d, env %q, error %v)", targets[i].mode, b.String(), a.statusKey(), a.status, a.env, a.err)
			}
			ttfb = append(ttfb, a.ttfb)
		}
		return summarize(ttfb).P50, nil
	}
	began := time.Now()
	for q := range *quads {
		sums := make([]float64, len(targets))
		if *pairing == "concurrent" {
			for k := range 2 {
				var wg sync.WaitGroup
				errs := make([]error, len(targets))
				for i := range targets {
					wg.Go(func() {
						v, err := slot(i, q, k)
						sums[i] += v
						errs[i] = err
					})
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					return nil, err
				}
			}
		} else {
			for k, i := range palindrome(q, len(targets)) {
				v, err := slot(i, q, k)
				if err != nil {
					return nil, err
				}
				sums[i] += v
			}
		}
		for i, t := range targets {
			res.TTFB[t.mode] = append(res.TTFB[t.mode], sums[i]/2)
		}
		if *batch > 0 && (q+1)%*batch == 0 && q+1 < *quads {
			if err := stopAll(targets, started); err != nil {
				return nil, err
			}
			waitQuiet(*quiet, 5*time.Second)
		}
	}
	res.Seconds = time.Since(began).Seconds()
	return res, nil
}

// palindrome is the order of quad q's slots over n modes: the modes from
// q mod n onwards, then the same backwards (0 1 2 2 1 0, then 1 2 0 0 2 1).
func palindrome(q, n int) []int {
	order := make([]int, 0, 2*n)
	for i := range n {
		order = append(order, (q+i)%n)
	}
	for i := n - 1; i >= 0; i-- {
		order = append(order, order[i])
	}
	return order
}

// stopAll stops the envs each target started (through its admin socket,
// a few at a time) and forgets them.
func stopAll(targets []coldTarget, started [][]string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, t := range targets {
		c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", t.admin)
			},
		}}
		envs := make(chan string)
		for range 4 {
			wg.Go(func() {
				for env := range envs {
					req, err := http.NewRequest(http.MethodPost, "http://admin/v1/envs/"+env+"/stop", nil)
					if err != nil {
						panic(err) // env names are the hosts' first labels
					}
					req.Header.Set(admin.ActionHeader, "1")
					resp, err := c.Do(req)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("coldquads: mode %s: stop %s: %w", t.mode, env, err))
						mu.Unlock()
					}
				}
			})
		}
		wg.Go(func() {
			defer close(envs)
			for _, env := range started[i] {
				envs <- env
			}
		})
	}
	wg.Wait()
	for i := range started {
		started[i] = started[i][:0]
	}
	return errors.Join(errs...)
}

// waitQuiet waits until the CPUs' busy share over 100 ms (from
// /proc/stat) is under share, or for limit at most: the kernel finishes a
// network namespace's teardown in the background, after its stop.
func waitQuiet(share float64, limit time.Duration) {
	end := time.Now().Add(limit)
	busy0, total0 := cpuTimes()
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		busy, total := cpuTimes()
		if total > total0 && float64(busy-busy0)/float64(total-total0) < share {
			return
		}
		busy0, total0 = busy, total
	}
}

// cpuTimes is the busy and total time of all CPUs, in ticks, from the
// first line of /proc/stat.
func cpuTimes() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// parseColdTargets reads MODE=NETNS,ADDR[,ADMIN] arguments; modes are
// distinct.
func parseColdTargets(args []string) ([]coldTarget, error) {
	if len(args) < 2 {
		return nil, errors.New("coldquads: want at least two targets MODE=NETNS,ADDR")
	}
	var ts []coldTarget
	for _, arg := range args {
		mode, rest, ok1 := strings.Cut(arg, "=")
		path, addr, ok2 := strings.Cut(rest, ",")
		addr, admin, _ := strings.Cut(addr, ",")
		if !ok1 || !ok2 || mode == "" || path == "" || addr == "" {
			return nil, fmt.Errorf("coldquads: target %q: want MODE=NETNS,ADDR[,ADMIN]", arg)
		}
		if slices.ContainsFunc(ts, func(t coldTarget) bool { return t.mode == mode }) {
			return nil, fmt.Errorf("coldquads: mode %q named twice", mode)
		}
		if _, err := netip.ParseAddrPort(addr); err != nil {
			return nil, fmt.Errorf("coldquads: target %q: %w", arg, err)
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("coldquads: target %q: %w", arg, err)
		}
		ts = append(ts, coldTarget{mode: mode, ns: path, addr: addr, admin: admin})
	}
	return ts, nil
}

// nsClient is newClient (a fresh connection per request) whose
// connections are made in t's network namespace (netns.DialIn).
func nsClient(t coldTarget, timeout time.Duration) *http.Client {
	c := newClient(t.addr, timeout, true)
	d := &net.Dialer{Timeout: timeout}
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return netns.DialIn(ctx, t.ns, d, network, t.addr)
	}
	return c
}
