package devserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/internal/cgroupfile"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const cgroupMount = "/sys/fs/cgroup"

// cpuPeriod is the CFS period (100ms) that CPUs is a share of.
const cpuPeriod = 100000

// envCgroup is one env's cgroup, on cgroup v2 where the host has it
// (unified mode), else on the v1 memory, cpu and pids hierarchies.
type envCgroup interface {
	// path is the cgroup's path below the hierarchy roots.
	path() string
	// procsFiles lists the v1 cgroup.procs files the trampoline writes
	// to join the cgroup, made writable by cred's user if set.
	procsFiles(cred *credential) ([]string, error)
	// dirFD is an open descriptor of the v2 cgroup directory, for
	// SysProcAttr.UseCgroupFD; -1 on v1.
	dirFD() int
	// kill SIGKILLs everything in the cgroup and waits until it is empty.
	kill() error
	// memoryUsage is the memory the env uses, without the page cache the
	// kernel can drop, in bytes; -1 when unknown.
	memoryUsage() int64
	// remove kills what is left and deletes the cgroup.
	remove() error
	// serving gives the cgroup the CPU weight of a serving env: it was
	// made with the weight of a booting one (see bootCPUShares).
	serving() error
}

// The CPU weight of an env's cgroup while its dev server boots, and once
// it serves. Each env has a cgroup of its own, and the kernel shares the
// CPUs among sibling cgroups by their weights, whatever the nice values
// of the tasks inside: the boot's nice value (bootNice) orders it only
// against its own env's processes. So, in a start storm, each booting
// env's cgroup took as large a share as an env already serving; made at
// the weight of a nice 19 task, it yields to them as bootNice meant.
const (
	bootCPUShares    = 15 // v1 cpu.shares: a nice 19 task's weight
	servingCPUShares = 1024
	bootCPUWeight    = 1 // v2 cpu.weight, the least
	servingCPUWeight = 100
)

// newCgroup makes the cgroup parent/name with limits r.
func newCgroup(parent, name string, r lifecycle.Resources) (envCgroup, error) {
	p := envCgroupPath(parent, name)
	if cgroups.Mode() == cgroups.Unified {
		return newCgroupV2(p, r)
	}
	return newCgroupV1(p, r)
}

// envCgroupPath is the cgroup of env name under parent (Config.CgroupParent).
func envCgroupPath(parent, name string) string { return "/" + strings.Trim(parent, "/") + "/" + name }

// loadCgroup opens an existing env cgroup (an adopted env's).
func loadCgroup(p string) (envCgroup, error) {
	if cgroups.Mode() == cgroups.Unified {
		m, err := cgroup2.Load(p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(cgroupMount, p)); err != nil {
			return nil, err
		}
		return &cgroupV2{m: m, p: p, fd: -1}, nil
	}
	if _, err := os.Stat(filepath.Join(cgroupMount, "memory", p)); err != nil {
		return nil, err
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		return nil, err
	}
	return &cgroupV1{cg: cg, p: p}, nil
}

// v1Hierarchy is the v1 controllers envgate uses, those of them mounted.
// It is worked out once it can be (it parses the mount table): a cgroup
// hierarchy unmounted under a running gateway is not followed; a failure
// is not kept, so one mounted later is.
func v1Hierarchy() ([]cgroup1.Subsystem, error) {
	v1Cached.mu.Lock()
	defer v1Cached.mu.Unlock()
	if v1Cached.subs != nil {
		return v1Cached.subs, nil
	}
	subs, err := v1Controllers()
	if err == nil {
		v1Cached.subs = subs
	}
	return subs, err
}

var v1Cached struct {
	mu   sync.Mutex
	subs []cgroup1.Subsystem
}

func v1Controllers() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var out []cgroup1.Subsystem
	for _, s := range all {
		switch s.Name() {
		case cgroup1.Memory, cgroup1.Cpu, cgroup1.Pids:
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no memory, cpu or pids cgroup v1 controller mounted")
	}
	return out, nil
}

type cgroupV1 struct {
	cg cgroup1.Cgroup
	p  string
}

func newCgroupV1(p string, r lifecycle.Resources) (*cgroupV1, error) {
	res := &specs.LinuxResources{}
	if r.Memory > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &r.Memory}
	}
	if r.CPUs > 0 {
		quota, period := int64(r.CPUs*cpuPeriod), uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if r.Pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: &r.Pids}
	}
	shares := uint64(bootCPUShares)
	if res.CPU == nil {
		res.CPU = &specs.LinuxCPU{}
	}
	res.CPU.Shares = &shares
	cg, err := cgroup1.New(cgroup1.StaticPath(p), res, cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		return nil, fmt.Errorf("devserver: cgroup v1 %s: %w", p, err)
	}
	return &cgroupV1{cg: cg, p: p}, nil
}

func (c *cgroupV1) path() string { return c.p }
func (c *cgroupV1) dirFD() int   { return -1 }
func (c *cgroupV1) procsFiles(cred *credential) ([]string, error) {
	var out []string
	for _, ctrl := range []string{"memory", "cpu", "pids"} {
		f := filepath.Join(cgroupMount, ctrl, c.p, "cgroup.procs")
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if cred != nil {
			// v1 lets a process move itself into a cgroup whose
			// cgroup.procs it can write; this one only, its own.
			if err := os.Chown(f, int(cred.UID), int(cred.GID)); err != nil {
				return nil, err
			}
		}
		out = append(out, f)
	}
	return out, nil
}

func (c *cgroupV1) kill() error {
	return killUntilEmpty(func() ([]int, error) {
		procs, err := c.cg.Processes(cgroup1.Memory, true)
		if err != nil && errors.Is(err, os.ErrNotExist) {
			procs, err = c.cg.Processes(cgroup1.Pids, true)
		}
		pids := make([]int, len(procs))
		for i, p := range procs {
			pids[i] = p.Pid
		}
		return pids, err
	})
}

func (c *cgroupV1) serving() error {
	return writeCPUWeight(filepath.Join(cgroupMount, "cpu", c.p, "cpu.shares"), servingCPUShares)
}

func (c *cgroupV1) memoryUsage() int64 {
	dir := filepath.Join(cgroupMount, "memory", c.p)
	u, err := cgroupfile.Int(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return -1
	}
	return max(u-cgroupfile.Stat(filepath.Join(dir, "memory.stat"), "total_inactive_file"), 0)
}

func (c *cgroupV1) remove() error {
	subs, err := v1Hierarchy()
	if err == nil {
		var dirs []string
		for _, s := range subs {
			if p, ok := s.(interface{ Path(string) string }); ok {
				dirs = append(dirs, p.Path(c.p))
			}
		}
		if rmdirs(dirs) == nil {
			return nil
		}
	}
	kerr := c.kill()
	return errors.Join(kerr, c.cg.Delete())
}

type cgroupV2 struct {
	m  *cgroup2.Manager
	p  string
	fd int // open directory, for UseCgroupFD; -1 once closed
}

func newCgroupV2(p string, r lifecycle.Resources) (*cgroupV2, error) {
	res := &cgroup2.Resources{}
	if r.Memory > 0 {
		res.Memory = &cgroup2.Memory{Max: &r.Memory}
	}
	if r.CPUs > 0 {
		quota, period := int64(r.CPUs*cpuPeriod), uint64(cpuPeriod)
		res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)}
	}
	if r.Pids > 0 {
		res.Pids = &cgroup2.Pids{Max: r.Pids}
	}
	if cpuControlled(p) {
		weight := uint64(bootCPUWeight)
		if res.CPU == nil {
			res.CPU = &cgroup2.CPU{}
		}
		res.CPU.Weight = &weight
	}
	m, err := cgroup2.NewManager(cgroupMount, p, res)
	if err != nil {
		return nil, fmt.Errorf("devserver: cgroup v2 %s: %w", p, err)
	}
	fd, err := syscall.Open(filepath.Join(cgroupMount, p), syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		m.Delete()
		return nil, fmt.Errorf("devserver: cgroup v2 %s: %w", p, err)
	}
	return &cgroupV2{m: m, p: p, fd: fd}, nil
}

func (c *cgroupV2) path() string { return c.p }
func (c *cgroupV2) dirFD() int   { return c.fd }
func (c *cgroupV2) procsFiles(*credential) ([]string, error) {
	return nil, errors.New("cgroup v2 is joined at clone (UseCgroupFD)")
}

func (c *cgroupV2) kill() error {
	if err := c.m.Kill(); err != nil {
		return err
	}
	return killUntilEmpty(func() ([]int, error) {
		procs, err := c.m.Procs(true)
		pids := make([]int, len(procs))
		for i, p := range procs {
			pids[i] = int(p)
		}
		return pids, err
	})
}

func (c *cgroupV2) serving() error {
	return writeCPUWeight(filepath.Join(cgroupMount, c.p, "cpu.weight"), servingCPUWeight)
}

// cpuControlled reports whether the v2 cgroup p gets the cpu controller
// (its parent's subtree_control names it): only then has it a cpu.weight.
func cpuControlled(p string) bool {
	b, err := os.ReadFile(filepath.Join(cgroupMount, filepath.Dir(p), "cgroup.subtree_control"))
	return err == nil && slices.Contains(strings.Fields(string(b)), "cpu")
}

// writeCPUWeight writes w to the weight file at path; a cgroup without
// the cpu controller has none, which is no error.
func writeCPUWeight(path string, w int) error {
	err := os.WriteFile(path, []byte(strconv.Itoa(w)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (c *cgroupV2) memoryUsage() int64 {
	dir := filepath.Join(cgroupMount, c.p)
	u, err := cgroupfile.Int(filepath.Join(dir, "memory.current"))
	if err != nil {
		return -1
	}
	return max(u-cgroupfile.Stat(filepath.Join(dir, "memory.stat"), "inactive_file"), 0)
}

func (c *cgroupV2) remove() error {
	if c.fd >= 0 {
		syscall.Close(c.fd)
		c.fd = -1
	}
	if rmdirs([]string{filepath.Join(cgroupMount, c.p)}) == nil {
		return nil
	}
	kerr := c.kill()
	return errors.Join(kerr, c.m.Delete())
}

// rmdirs removes the directories of a cgroup that is empty, as it is once
// its env's processes have been killed and waited for: one rmdir each. The
// kernel refuses one that still holds a process (EBUSY); then remove goes
// the long way, kill and the library's Delete, which walk the cgroup's
// files: a thousand such walks at once, as at shutdown, queue on the
// kernel's cgroup file system lock for seconds. A directory already gone
// is success.
func rmdirs(dirs []string) error {
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// killUntilEmpty SIGKILLs the pids list returns until it returns none,
// for at most five seconds. A cgroup that no longer exists is empty.
func killUntilEmpty(list func() ([]int, error)) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := list()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("devserver: cgroup processes: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			// v1 lists the gateway while one of its threads visits
			// the cgroup to start a dev server (startInCgroupsV1).
			if pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devserver: %d processes left in the cgroup after SIGKILL", len(pids))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RemoveCgroups kills the processes in, and removes, every env cgroup
// under parent (Config.CgroupParent), then parent itself: what a crashed
// gateway left. It returns the cgroups removed. `envgate gc` uses it;
// never call it while a gateway of the same parent runs.
func RemoveCgroups(parent string) ([]string, error) {
	removed, err := removeCgroups(parent, nil)
	removeCgroupParent(parent)
	return removed, err
}

// removeCgroups removes the env cgroups under parent not in keep.
func removeCgroups(parent string, keep map[string]bool) ([]string, error) {
	parent = "/" + strings.Trim(parent, "/")
	dir := filepath.Join(cgroupMount, parent)
	if cgroups.Mode() != cgroups.Unified {
		dir = filepath.Join(cgroupMount, "memory", parent)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil // no parent: nothing left behind
	}
	var removed []string
	var errs []error
	for _, ent := range ents {
		p := parent + "/" + ent.Name()
		if !ent.IsDir() || keep[p] {
			continue
		}
		cg, err := loadCgroup(p)
		if err == nil {
			err = cg.remove()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("devserver: remove cgroup %s: %w", p, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// removeCgroupParent removes CgroupParent once no env cgroup is left in
// it (rmdir fails on a cgroup with children, which then stays).
func removeCgroupParent(parent string) {
	parent = "/" + strings.Trim(parent, "/")
	dirs := []string{filepath.Join(cgroupMount, parent)}
	if cgroups.Mode() != cgroups.Unified {
		dirs = nil
		for _, ctrl := range []string{"memory", "cpu", "pids"} {
			dirs = append(dirs, filepath.Join(cgroupMount, ctrl, parent))
		}
	}
	for _, d := range dirs {
		os.Remove(d)
	}
}

// cgroupCPUTime reads the CPU time used by the cgroup at p (below the
// hierarchy roots), on v2 or v1; 0 when unknown.
func cgroupCPUTime(p string) time.Duration {
	if usec := cgroupfile.Stat(filepath.Join(cgroupMount, p, "cpu.stat"), "usage_usec"); usec > 0 {
		return time.Duration(usec) * time.Microsecond
	}
	for _, h := range []string{"cpuacct", "cpu,cpuacct"} {
		if ns, err := cgroupfile.Int(filepath.Join(cgroupMount, h, p, "cpuacct.usage")); err == nil {
			return time.Duration(ns)
		}
	}
	return 0
}
