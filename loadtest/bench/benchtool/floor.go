package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FloorResult is what `benchtool floor` prints.
type FloorResult struct {
	Command     []string `json:"command"`
	Pool        string   `json:"pool"`
	Concurrency int      `json:"concurrency"`
	// Steps: the rate of starts that grew the live set to each step.
	Steps  []FloorStep `json:"steps"`
	Errors int         `json:"errors"`
	// FirstError is the first start's failure, if any.
	FirstError string `json:"first_error,omitempty"`
}

// FloorStep is one growth of the live set.
type FloorStep struct {
	Live            int     `json:"live"`
	Grown           int     `json:"grown"`
	Seconds         float64 `json:"seconds"`
	StartsPerSecond float64 `json:"starts_per_s"`
	Latency         Summary `json:"latency_ms"`
}

// runFloor measures the floor under the gateway's start rate: each start
// does only the kernel operations an isolated env's start needs and the
// dev server's own boot, with none of the gateway's logic, on the same
// machine. A start: a new network namespace (unshare on a locked thread),
// IPv6 off there, lo up, a veth pair with one end moved to the host, an
// address on each end, both up, then the dev server forked from that
// thread into a new pid and mount namespace (no mounts of its own, no
// init: fewer operations than an isolated env's start), and a GET of
// -path over the veth once its output says "listening on". The envs stay
// running, so the live set grows like in scale.sh, c starts in flight at
// once; at the end every server is killed and every namespace goes with
// the descriptors that held it.
//
// COMMAND's arguments may hold {{.Port}}, replaced by the port the server
// listens on (-port).
func runFloor(args []string) (*FloorResult, error) {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	stepsFlag := fs.String("steps", "500,1000,2000", "live envs at each step, ascending")
	c := fs.Int("concurrency", 16, "starts in flight at once")
	poolFlag := fs.String("pool", "10.217.0.0/16", "IPv4 prefix carved into a /30 per env (nothing else may use it)")
	prefix := fs.String("prefix", "bfl", "name prefix of the host ends of the veths")
	port := fs.Int("port", 3000, "port the server listens on inside its namespace")
	path := fs.String("path", "/healthz", "path to GET once the server listens")
	timeout := fs.Duration("timeout", 60*time.Second, "give up on one start after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return nil, errors.New("floor: want -- COMMAND [ARGS...]")
	}
	pool, err := netip.ParsePrefix(*poolFlag)
	if err != nil || !pool.Addr().Is4() || pool.Bits() > 30 {
		return nil, fmt.Errorf("floor: -pool %q: want an IPv4 prefix of /30 or more", *poolFlag)
	}
	var steps []int
	for _, s := range strings.Split(*stepsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || len(steps) > 0 && n <= steps[len(steps)-1] {
			return nil, fmt.Errorf("floor: -steps %q: want ascending positive numbers", *stepsFlag)
		}
		steps = append(steps, n)
	}
	if slots := 1 << (30 - pool.Bits()); steps[len(steps)-1] > slots {
		return nil, fmt.Errorf("floor: -pool %s holds %d envs, fewer than %d", pool, slots, steps[len(steps)-1])
	}
	for i, a := range argv {
		argv[i] = strings.ReplaceAll(a, "{{.Port}}", strconv.Itoa(*port))
	}
	host, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("floor: host namespace: %w", err)
	}
	defer unix.Close(host)

	f := &floor{argv: argv, pool: pool, prefix: *prefix, port: *port, path: *path, timeout: *timeout, host: host}
	defer f.cleanup()
	res := &FloorResult{Command: argv, Pool: pool.String(), Concurrency: *c}
	var next atomic.Int64
	live := 0
	for _, step := range steps {
		lat := make([]time.Duration, step-live)
		errs := make([]error, step-live)
		base := live
		var wg sync.WaitGroup
		began := time.Now()
		for range min(*c, step-live) {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= step {
						return
					}
					t0 := time.Now()
					errs[i-base] = f.start(i)
					lat[i-base] = time.Since(t0)
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(began)
		next.Store(int64(step))
		ok := lat[:0]
		for i, e := range errs {
			if e != nil {
				res.Errors++
				if res.FirstError == "" {
					res.FirstError = e.Error()
				}
				continue
			}
			ok = append(ok, lat[i])
		}
		res.Steps = append(res.Steps, FloorStep{Live: step, Grown: step - live, Seconds: elapsed.Seconds(),
			StartsPerSecond: float64(len(ok)) / elapsed.Seconds(), Latency: summarize(ok)})
		live = step
	}
	return res, nil
}

// floor holds what its starts made, for cleanup.
type floor struct {
	argv    []string
	pool    netip.Prefix
	prefix  string
	port    int
	path    string
	timeout time.Duration
	host    int // the host's network namespace

	mu    sync.Mutex
	procs []*exec.Cmd
	nsFDs []int
	links []string
}

// slot is the i-th /30 of the pool: host end .1, env end .2.
func (f *floor) slot(i int) (hostAddr, envAddr netip.Addr) {
	b := f.pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) * 4
	a := func(n uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	return a(v + 1), a(v + 2)
}

// start makes env i and waits until its server has answered.
func (f *floor) start(i int) error {
	hostAddr, envAddr := f.slot(i)
	hostIf := f.prefix + "-" + strconv.Itoa(i)
	out, err := f.spawn(i, hostIf, hostAddr, envAddr)
	if err != nil {
		return err
	}
	defer out.Close()
	// Readiness: the server's own line, then one request over the veth.
	deadline := time.Now().Add(f.timeout)
	out.SetReadDeadline(deadline)
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("env %d: no %q line: %w", i, listeningMark, err)
		}
		if strings.Contains(line, listeningMark) {
			break
		}
	}
	go io.Copy(io.Discard, out) // the server may write more; a full pipe would stop it
	// Each connect bounded by 100 ms and retried, as the gateway's probe
	// (lifecycle/devserver/probe.go): a SYN lost while the pair settles
	// would otherwise wait for TCP's 1 s retransmission.
	d := &net.Dialer{Timeout: 100 * time.Millisecond}
	addr := netip.AddrPortFrom(envAddr, uint16(f.port)).String()
	cl := &http.Client{Timeout: time.Until(deadline), Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			for {
				c, err := d.DialContext(ctx, network, addr)
				if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
					return c, err
				}
			}
		}}}
	resp, err := cl.Get("http://" + addr + f.path)
	if err != nil {
		return fmt.Errorf("env %d: %w", i, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("env %d: GET %s: status %d", i, f.path, resp.StatusCode)
	}
	return nil
}

// spawn does the kernel's part of env i's start on a locked thread and
// returns the read end of the server's output (a dup: out stays open
// after the thread is back in the host's namespace).
func (f *floor) spawn(i int, hostIf string, hostAddr, envAddr netip.Addr) (*os.File, error) {
	runtime.LockOSThread()
	// Back in the host's namespace before the thread is let go; if that
	// fails, the locked goroutine's exit ends the thread.
	back := false
	defer func() {
		if back {
			runtime.UnlockOSThread()
		}
	}()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		back = unix.Setns(f.host, unix.CLONE_NEWNET) == nil
		return nil, fmt.Errorf("env %d: unshare: %w", i, err)
	}
	nsFD, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		f.mu.Lock()
		f.nsFDs = append(f.nsFDs, nsFD)
		f.mu.Unlock()
	}
	var cmd *exec.Cmd
	var outR *os.File
	if err == nil {
		cmd, outR, err = f.inside(i, hostIf, hostAddr, envAddr)
	}
	if setErr := unix.Setns(f.host, unix.CLONE_NEWNET); setErr != nil {
		return nil, fmt.Errorf("env %d: back to the host namespace: %w", i, setErr)
	}
	back = true
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.procs = append(f.procs, cmd)
	f.links = append(f.links, hostIf)
	f.mu.Unlock()
	if err := f.hostEnd(hostIf, hostAddr, envAddr); err != nil {
		outR.Close()
		return nil, fmt.Errorf("env %d: %w", i, err)
	}
	return outR, nil
}

// inside runs in env i's new namespace: its links and addresses, and the
// server forked from this thread.
func (f *floor) inside(i int, hostIf string, hostAddr, envAddr netip.Addr) (*exec.Cmd, *os.File, error) {
	for _, p := range []string{"all", "default"} {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p+"/disable_ipv6", []byte("1"), 0); err != nil {
			return nil, nil, fmt.Errorf("env %d: ipv6 off: %w", i, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("env %d: lo: %w", i, err)
	}
	hostMAC, envMAC := floorMACs(hostAddr, envAddr)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", HardwareAddr: envMAC}, PeerName: hostIf,
		PeerHardwareAddr: hostMAC, PeerNamespace: netlink.NsFd(f.host)}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("env %d: veth: %w", i, err)
	}
	eth, err := netlink.LinkByName("eth0")
	if err == nil {
		err = netlink.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: envAddr.AsSlice(), Mask: net.CIDRMask(30, 32)}})
	}
	if err == nil {
		err = netlink.LinkSetUp(eth)
	}
	if err == nil {
		// As the gateway does (netns/neigh.go): no ARP on a fresh pair,
		// and no neighbor table to fill up as envs accumulate.
		err = netlink.NeighSet(&netlink.Neigh{LinkIndex: eth.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: hostAddr.AsSlice(), HardwareAddr: hostMAC})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("env %d: eth0: %w", i, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	cmd := exec.Command(f.argv[0], f.argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("env %d: start: %w", i, err)
	}
	return cmd, r, nil
}

// hostEnd gives the host end its address and brings it up, IPv6 off first.
func (f *floor) hostEnd(name string, addr, envAddr netip.Addr) error {
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0); err != nil {
		return fmt.Errorf("%s: ipv6 off: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(30, 32)}})
	}
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err == nil {
		_, envMAC := floorMACs(addr, envAddr)
		err = netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: envAddr.AsSlice(), HardwareAddr: envMAC})
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// floorMACs are a pair's MACs, from their addresses, as the gateway's
// (netns.vethMACs) but with 02:66 and 02:68, so never theirs.
func floorMACs(hostAddr, envAddr netip.Addr) (host, env net.HardwareAddr) {
	h, e := hostAddr.As4(), envAddr.As4()
	return net.HardwareAddr{0x02, 0x66, h[0], h[1], h[2], h[3]}, net.HardwareAddr{0x02, 0x68, e[0], e[1], e[2], e[3]}
}

// cleanup kills every server, lets go of every namespace and removes any
// host end that is still there.
func (f *floor) cleanup() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.procs {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	for _, c := range f.procs {
		c.Wait()
	}
	for _, fd := range f.nsFDs {
		unix.Close(fd)
	}
	// Each host end goes with its namespace; a link still there after
	// that (a start that failed midway) is deleted.
	for _, name := range f.links {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	}
}
