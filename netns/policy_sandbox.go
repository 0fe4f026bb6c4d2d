package netns

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// configureSandbox closes IPv6 on both ends of sb's veth (the firewall
// drops it too; this keeps link-local addresses and router solicitations
// from appearing at all) and gives sb a default route via its host end
// when it has egress, or takes it away: what of that CreateWith (Setup)
// or an earlier Attach has not done already.
func configureSandbox(sb *Sandbox, egress bool) error {
	if !sb.noIPv6 {
		if err := disableIPv6Host(sb.HostIf); err != nil {
			return err
		}
		// "all" also sets "default" and every interface there (lo,
		// eth0): one write, not three.
		if err := sb.Do(func() error { return writeNetSysctl("ipv6/conf/all/disable_ipv6") }); err != nil {
			return fmt.Errorf("netns: %s: policy: disable IPv6: %w", sb.Name, err)
		}
		sb.noIPv6 = true
	}
	want := routeNone
	if egress {
		want = routeDefault
	}
	if sb.route != want {
		if err := setDefaultRoute(sb, egress); err != nil {
			return fmt.Errorf("netns: %s: policy: %w", sb.Name, err)
		}
		sb.route = want
	}
	return nil
}

// setDefaultRoute adds or removes sb's default route, through a netlink
// socket opened in its namespace (no thread of its own in there: a warm
// spare given to an env with egress gets its route so).
func setDefaultRoute(sb *Sandbox, on bool) error {
	if !sb.handle.IsOpen() {
		return errors.New("sandbox destroyed")
	}
	h, err := netlink.NewHandleAt(sb.handle)
	if err != nil {
		return err
	}
	defer h.Close()
	peer := sb.peerIndex
	if peer == 0 { // adopted
		link, err := h.LinkByName(PeerIfName)
		if err != nil {
			return err
		}
		peer = link.Attrs().Index
	}
	route := defaultRoute(peer, sb.Slot)
	if on {
		return h.RouteReplace(route)
	}
	if err := h.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// defaultRoute is the default route of a sandbox in slot via its host
// end, on the link with index peer inside.
func defaultRoute(peer int, slot Slot) *netlink.Route {
	return &netlink.Route{LinkIndex: peer, Gw: slot.Host.AsSlice()}
}

// hostIPv6Conf is the host's /proc/sys/net/ipv6/conf, opened once: the
// host ends' settings are then looked up from there, without walking the
// long dcache chains of /proc/sys/net, ipv6 and conf (one entry per
// network namespace) at every start.
var hostIPv6Conf struct {
	once sync.Once
	fd   int // -1: no IPv6 (or not openable; then paths are used)
}

// disableIPv6Host turns IPv6 off on the host's interface dev. It must be
// called from a thread in the host's network namespace. A kernel without
// IPv6 has nothing to turn off.
func disableIPv6Host(dev string) error {
	hostIPv6Conf.once.Do(func() {
		fd, err := unix.Open("/proc/sys/net/ipv6/conf", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
		}
		hostIPv6Conf.fd = fd
	})
	var err error
	if fd := hostIPv6Conf.fd; fd >= 0 {
		err = writeSysctl(fd, dev+"/disable_ipv6")
	} else {
		err = writeSysctl(unix.AT_FDCWD, "/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6")
	}
	if err != nil {
		return fmt.Errorf("disable IPv6 on %s: %w", dev, err)
	}
	return nil
}

// writeNetSysctl writes "1" to /proc/sys/net/path of the calling
// thread's network namespace (a sysctl under /proc/sys/net is the
// namespace of the thread that opens it). With many namespaces on the
// machine it goes through a procfs instance of its own, made for this
// write and gone with it.
//
// Why: the kernel's dentries of /proc/sys/net/ipv6 of every network
// namespace hang off the one /proc/sys/net, with one name, so they share
// one hash chain; the first lookup in a new namespace walks the whole
// chain, failing, twice. With 2,000 namespaces that write costs about
// 1.3 ms of CPU, against 0.07 ms with none. A new procfs instance (a
// superblock of its own: kernel 5.8 and later) has chains of one and
// costs about 0.2 ms whatever the number of namespaces, mostly making
// and dropping the superblock: it pays once there are a few hundred
// namespaces (procInstanceAbove of this process's own sandboxes, the
// most of them at scale). Where an instance cannot be made, /proc it is.
func writeNetSysctl(path string) error {
	root := -1
	if liveSandboxes.Load() > procInstanceAbove.Load() {
		if fd, err := newProcInstance(); err == nil {
			root = fd
		}
	}
	if root < 0 {
		return writeSysctl(unix.AT_FDCWD, "/proc/sys/net/"+path)
	}
	defer unix.Close(root)
	return writeSysctl(root, "sys/net/"+path)
}

// procInstanceAbove is how many live sandboxes make writeNetSysctl go
// through a procfs instance (set by benchmarks only).
var procInstanceAbove atomic.Int64

func init() { procInstanceAbove.Store(256) }

// newProcInstance mounts a new instance of procfs, attached nowhere, and
// returns its root; closing it unmounts it.
func newProcInstance() (int, error) {
	fs, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, err
	}
	return unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
}

// writeSysctl writes "1" to the sysctl file at path (relative to dir). A
// file that does not exist (no IPv6) is no error.
func writeSysctl(dir int, path string) error {
	fd, err := unix.Openat(dir, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("1\n"))
	return err
}
