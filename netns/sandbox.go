package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config says which names and addresses a Manager may use.
type Config struct {
	// Prefix marks everything this instance creates (namespaces
	// "<prefix>-<id>", host links "<prefix>-<slot>"). Required; see
	// ValidatePrefix. Two gateways on one machine need distinct prefixes.
	Prefix string
	// Pool is the IPv4 prefix carved into one /30 per sandbox.
	// Default DefaultPool (10.213.0.0/16).
	Pool netip.Prefix
}

// Manager creates and destroys sandboxes for one instance prefix.
type Manager struct {
	prefix    string
	pool      *Pool
	reclaimer reclaimer
	addrs     addrCache // the host's addresses, for Allocate (addrs.go)
}

// New returns a Manager. It does not touch the kernel; call GC at start-up
// to remove what a crashed run left behind.
func New(cfg Config) (*Manager, error) {
	if err := ValidatePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if !cfg.Pool.IsValid() {
		cfg.Pool = DefaultPool
	}
	pool, err := NewPool(cfg.Pool)
	if err != nil {
		return nil, err
	}
	return &Manager{prefix: cfg.Prefix, pool: pool}, nil
}

// Prefix is the instance prefix.
func (m *Manager) Prefix() string { return m.prefix }

// Pool is the manager's address pool.
func (m *Manager) Pool() *Pool { return m.pool }

// Sandbox is one network namespace with a veth pair to the root namespace.
type Sandbox struct {
	ID     string // caller's identifier, part of the namespace name
	Name   string // namespace name under RunDir
	HostIf string // root-namespace end of the veth pair
	Slot   Slot   // addresses: Slot.Host on HostIf, Slot.Peer on PeerIfName

	handle    netns.NsHandle
	hostIndex int         // HostIf's ifindex; 0: not known yet
	peerIndex int         // PeerIfName's ifindex inside; 0: not known
	noIPv6    bool        // IPv6 is off on both ends (Setup, or an Attach)
	route     routeState  // whether it has a default route, if known
	destroyed atomic.Bool // Destroy has queued the slot's reclaim
	counted   bool        // in liveSandboxes until destroyed; set when made
}

// liveSandboxes counts the sandboxes of this process (made or adopted,
// not yet destroyed), for what costs more as network namespaces
// accumulate (writeNetSysctl).
var liveSandboxes atomic.Int64

// count adds sb to liveSandboxes, before anyone else sees sb.
func (sb *Sandbox) count() {
	sb.counted = true
	liveSandboxes.Add(1)
}

// Path is the namespace's bind mount, usable with setns(2) and nsenter.
func (s *Sandbox) Path() string { return filepath.Join(RunDir, s.Name) }

// Addr is the address processes inside listen on, as seen from the host.
func (s *Sandbox) Addr() netip.Addr { return s.Slot.Peer }

// Setup is what CreateWith does to a sandbox besides making its
// namespace and veth pair: the firewall's part of a sandbox
// (Firewall.Setup), done while the sandbox is made, so that Attach then
// has only its set membership left. IPv6 goes off before any link is up:
// on a link that is up, it costs the removal of what IPv6 set up there,
// and the kernel retries the sysctl write until its rtnl_trylock
// succeeds, while its own work on a link that has just come up (link
// watch, IPv6 autoconfiguration) takes that lock. Written right after
// the links came up, the host end's write took 1.6-3.7 ms in a gateway;
// a sandbox made with all of Setup costs 0.2-0.4 ms more than one made
// without (BenchmarkFirewallCreate).
type Setup struct {
	// NoIPv6 turns IPv6 off inside the namespace (on every interface
	// there, and for those made later) and on the host end.
	NoIPv6 bool
	// DefaultRoute gives the sandbox a default route via its host end.
	DefaultRoute bool
}

// routeState is whether a sandbox has a default route, as far as its
// Sandbox value knows.
type routeState uint8

const (
	routeUnknown routeState = iota // adopted: look
	routeNone
	routeDefault
)

// Create makes the sandbox for id: a named namespace with lo up, and a veth
// pair with addresses from the pool, both ends up. On failure nothing it
// made is left behind.
func (m *Manager) Create(ctx context.Context, id string) (*Sandbox, error) {
	return m.CreateWith(ctx, id, Setup{})
}

// CreateWith is Create with setup done as the sandbox is made. The work
// runs on a thread at StartNice, so that it yields the CPUs to the
// gateway's request path.
func (m *Manager) CreateWith(ctx context.Context, id string, setup Setup) (sb *Sandbox, err error) {
	err = onStartThread(func() error {
		var err error
		sb, err = m.createWith(ctx, id, setup)
		return err
	})
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (m *Manager) createWith(ctx context.Context, id string, setup Setup) (_ *Sandbox, err error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slot, err := m.pool.Allocate(m.addrTaken)
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{
		ID:     id,
		Name:   nsName(m.prefix, id),
		HostIf: hostIfName(m.prefix, slot.Index),
		Slot:   slot,
		handle: netns.None(),
	}
	success, madeNS := false, false
	defer func() {
		switch {
		case success:
		case madeNS:
			m.Destroy(sb) // best effort; the original error is what matters
		default:
			// The name may belong to a live sandbox (a second Create for
			// one ID): undo only what this call did, never touch it.
			m.pool.Release(slot.Index)
		}
	}()

	var inside func() error
	if setup.NoIPv6 {
		// Before lo is up, and before the veth's peer arrives, which
		// then starts with IPv6 off: "all" sets the default too.
		inside = func() error { return writeNetSysctl("ipv6/conf/all/disable_ipv6") }
	}
	sb.handle, err = createNamed(sb.Name, inside)
	if err != nil {
		return nil, err
	}
	madeNS = true
	sb.count()
	inner, err := netlink.NewHandleAt(sb.handle)
	if err != nil {
		return nil, fmt.Errorf("netns: %s: netlink handle: %w", sb.Name, err)
	}
	defer inner.Close()

	// A new namespace's loopback device is always index 1
	// (LOOPBACK_IFINDEX): no lookup.
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}
	if err := inner.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("netns: %s: lo up: %w", sb.Name, err)
	}

	// The MACs are ours (vethMACs), so the host end needs no lookup: the
	// neighbour entries need its MAC, and LinkAdd fills in its index.
	hostMAC, peerMAC := vethMACs(slot)
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: sb.HostIf, HardwareAddr: hostMAC},
		PeerName:         PeerIfName,
		PeerHardwareAddr: peerMAC,
		PeerNamespace:    netlink.NsFd(int(sb.handle)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netns: %s: add veth %s: %w", sb.Name, sb.HostIf, err)
	}
	var host netlink.Link = veth
	if veth.Index == 0 {
		if host, err = netlink.LinkByName(sb.HostIf); err != nil {
			return nil, fmt.Errorf("netns: %s: find %s: %w", sb.Name, sb.HostIf, err)
		}
	}
	sb.hostIndex = host.Attrs().Index
	if setup.NoIPv6 {
		// While the link is down.
		if err := disableIPv6Host(sb.HostIf); err != nil {
			return nil, fmt.Errorf("netns: %s: %w", sb.Name, err)
		}
	}
	if err := netlink.AddrAdd(host, addr30(slot.Host)); err != nil {
		return nil, fmt.Errorf("netns: %s: address %s: %w", sb.Name, slot.Host, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("netns: %s: %s up: %w", sb.Name, sb.HostIf, err)
	}
	peer, err := inner.LinkByName(PeerIfName)
	if err != nil {
		return nil, fmt.Errorf("netns: %s: find %s: %w", sb.Name, PeerIfName, err)
	}
	if err := inner.AddrAdd(peer, addr30(slot.Peer)); err != nil {
		return nil, fmt.Errorf("netns: %s: address %s: %w", sb.Name, slot.Peer, err)
	}
	if err := inner.LinkSetUp(peer); err != nil {
		return nil, fmt.Errorf("netns: %s: %s up: %w", sb.Name, PeerIfName, err)
	}
	if err := pinNeighbors(host, peer, inner, slot); err != nil {
		return nil, fmt.Errorf("netns: %s: %w", sb.Name, err)
	}
	sb.peerIndex = peer.Attrs().Index
	sb.noIPv6, sb.route = setup.NoIPv6, routeNone
	if setup.DefaultRoute {
		if err := inner.RouteReplace(defaultRoute(sb.peerIndex, slot)); err != nil {
			return nil, fmt.Errorf("netns: %s: default route: %w", sb.Name, err)
		}
		sb.route = routeDefault
	}
	success = true
	return sb, nil
}

// vethMACs are the MACs of a slot's veth pair: locally administered
// unicast, 02:65 (host end) and 02:67 (inside) followed by the end's IPv4
// address, so distinct on every pair of this machine's pools.
func vethMACs(slot Slot) (host, peer net.HardwareAddr) {
	h, p := slot.Host.As4(), slot.Peer.As4()
	return net.HardwareAddr{0x02, 0x65, h[0], h[1], h[2], h[3]}, net.HardwareAddr{0x02, 0x67, p[0], p[1], p[2], p[3]}
}

func addr30(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(30, 32)}}
}

// Destroy kills what still runs in the sandbox and deletes the namespace.
// The kernel then removes the veth pair with it, in a batch with other
// dying namespaces, and the addresses go back to the pool once the host
// end is gone (see reclaim.go; Settle waits for that). Every step runs
// even if an earlier one failed; a step whose object is already gone
// succeeds, so Destroy is idempotent.
func (m *Manager) Destroy(sb *Sandbox) error {
	return m.destroy(sb, killNamespace(sb.Path(), 5*time.Second))
}

// destroy is Destroy after the kill step, whose error is killErr.
func (m *Manager) destroy(sb *Sandbox, killErr error) error {
	var errs []error
	first := !sb.destroyed.Swap(true)
	if first && sb.counted {
		liveSandboxes.Add(-1)
	}
	if first && sb.hostIndex == 0 { // an adopted sandbox
		if l, err := netlink.LinkByName(sb.HostIf); err == nil {
			sb.hostIndex = l.Attrs().Index
		}
	}
	if killErr != nil {
		errs = append(errs, killErr)
	}
	sb.Close()
	if err := deleteNamed(sb.Name); err != nil {
		errs = append(errs, err)
	}
	// The veth goes with the namespace; the slot once it has (reclaim.go),
	// even if a step above failed: then after linkGrace, by hand.
	if first {
		if sb.hostIndex == 0 {
			// No host end to wait for (it is gone, or was never made).
			if err := deleteLink(sb.HostIf); err != nil {
				errs = append(errs, err)
			} else {
				m.pool.Release(sb.Slot.Index)
			}
		} else {
			m.reclaim(sb.HostIf, sb.hostIndex, sb.Slot.Index)
		}
	}
	return errors.Join(errs...)
}

// deleteLink removes a root-namespace link; a link already gone is success.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("netns: find link %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns: delete link %s: %w", name, err)
	}
	return nil
}

// Start starts cmd with its network namespace set to the sandbox's. Only
// the network namespace changes; mounts, pids and users are the host's.
//
// Prefer *os.File values for cmd.Stdout and cmd.Stderr: then Start starts no
// copying goroutines of its own.
func (s *Sandbox) Start(cmd *exec.Cmd) error { return s.StartWith(cmd, nil, nil) }

// StartWith is Start with hooks that run, inside the namespace, on the
// thread that forks cmd: before just before cmd.Start, after just after
// it (also when before or Start failed, so after can undo a half-done
// before). They suit per-thread state the child inherits, such as cgroup
// v1 membership. A nil hook is skipped. When after fails, the thread is
// discarded, never reused, and the error is returned even though cmd may
// have started: the caller checks cmd.Process.
func (s *Sandbox) StartWith(cmd *exec.Cmd, before, after func() error) error {
	if !s.handle.IsOpen() {
		return fmt.Errorf("netns: start in %s: sandbox destroyed", s.Name)
	}
	// A child with a mount namespace of its own is forked in the base
	// mount namespace (mountns.go); the thread is then discarded.
	newMountNS := useBaseMountNS && cmd.SysProcAttr != nil && cmd.SysProcAttr.Cloneflags&unix.CLONE_NEWNS != 0
	if newMountNS {
		// From the spawner's thread (spawner.go), if it can.
		err := spawnIn(int(s.handle), cmd, before, after)
		if !errors.Is(err, errNoSpawner) {
			if err != nil {
				return fmt.Errorf("netns: start %s in %s: %w", cmd.Path, s.Name, err)
			}
			return nil
		}
	}
	err := onThreadIn(s.handle, func() error {
		if newMountNS {
			leave, err := enterBaseMountNS()
			if err != nil {
				return threadTainted{err}
			}
			defer leave()
		}
		err := startHooked(cmd, before, after)
		var tainted threadTainted
		if newMountNS && !errors.As(err, &tainted) {
			return threadTainted{err}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("netns: start %s in %s: %w", cmd.Path, s.Name, err)
	}
	return nil
}

// startHooked runs before, cmd.Start and after (see StartWith). An error
// of after makes the thread tainted.
func startHooked(cmd *exec.Cmd, before, after func() error) error {
	var err error
	if before != nil {
		err = before()
	}
	if err == nil {
		err = cmd.Start()
	}
	if after != nil {
		if aerr := after(); aerr != nil {
			return threadTainted{errors.Join(err, aerr)}
		}
	}
	return err
}

// Do runs fn on a thread inside the sandbox's namespace (for tests and
// diagnostics: dialing from inside, listing links). fn must not start
// goroutines that need to run inside.
func (s *Sandbox) Do(fn func() error) error {
	if !s.handle.IsOpen() {
		return fmt.Errorf("netns: %s: sandbox destroyed", s.Name)
	}
	return onThreadIn(s.handle, fn)
}
