package lifecycle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/envgate/envgate/lifecycle/internal/cgroupfile"
	"github.com/prometheus/procfs"
)

// SystemAvailableMemory is the memory the gateway can still hand to envs,
// in bytes: MemAvailable of /proc/meminfo, or less when the gateway's own
// cgroup (v2 memory.max, v1 memory.limit_in_bytes) leaves less room. Page
// cache the kernel can drop (inactive file pages) counts as available, as
// it does in MemAvailable.
func SystemAvailableMemory() (int64, error) {
	proc, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, fmt.Errorf("lifecycle: memory: %w", err)
	}
	return availableMemory(proc, "/sys/fs/cgroup")
}

// availableMemory is SystemAvailableMemory for the process and cgroup
// file systems mounted at proc and cgroupRoot.
func availableMemory(proc procfs.FS, cgroupRoot string) (int64, error) {
	mi, err := proc.Meminfo()
	if err != nil {
		return 0, fmt.Errorf("lifecycle: memory: %w", err)
	}
	if mi.MemAvailableBytes == nil {
		return 0, errors.New("lifecycle: memory: no MemAvailable in meminfo")
	}
	avail := int64(*mi.MemAvailableBytes)
	if c, ok := cgroupAvailable(proc, cgroupRoot); ok && c < avail {
		avail = c
	}
	return avail, nil
}

// cgroupAvailable returns limit minus non-reclaimable usage of the
// gateway's own memory cgroup, when it has a limit.
func cgroupAvailable(proc procfs.FS, root string) (int64, bool) {
	self, err := proc.Self()
	if err != nil {
		return 0, false
	}
	groups, err := self.Cgroups()
	if err != nil {
		return 0, false
	}
	for _, g := range groups {
		switch {
		case g.HierarchyID == 0 && len(g.Controllers) == 0 && isCgroup2(root):
			dir := filepath.Join(root, g.Path)
			if a, ok := cgroupRoom(dir, "memory.max", "memory.current", "inactive_file"); ok {
				return a, true
			}
		case slices.Contains(g.Controllers, "memory"):
			// Inside a cgroup namespace the mount's root is our own group.
			for _, dir := range []string{filepath.Join(root, "memory", g.Path), filepath.Join(root, "memory")} {
				if a, ok := cgroupRoom(dir, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"); ok {
					return a, true
				}
			}
		}
	}
	return 0, false
}

func isCgroup2(mount string) bool {
	_, err := os.Stat(filepath.Join(mount, "cgroup.controllers"))
	return err == nil
}

// cgroupRoom reads limit and usage files of a memory cgroup dir. A missing
// dir, "max" or a v1 "no limit" (a huge number) mean no room figure.
func cgroupRoom(dir, limitFile, usageFile, inactiveKey string) (int64, bool) {
	limit, err := cgroupfile.Int(filepath.Join(dir, limitFile))
	if err != nil || limit >= 1<<60 {
		return 0, false
	}
	usage, err := cgroupfile.Int(filepath.Join(dir, usageFile))
	if err != nil {
		return 0, false
	}
	usage -= cgroupfile.Stat(filepath.Join(dir, "memory.stat"), inactiveKey)
	return max(limit-max(usage, 0), 0), true
}
