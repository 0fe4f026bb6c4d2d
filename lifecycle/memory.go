package lifecycle

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// SystemAvailableMemory is the memory the gateway can still hand to envs,
// in bytes: MemAvailable of /proc/meminfo, or less when the gateway's own
// cgroup (v2 memory.max, v1 memory.limit_in_bytes) leaves less room. Page
// cache the kernel can drop (inactive file pages) counts as available, as
// it does in MemAvailable.
func SystemAvailableMemory() (int64, error) {
	avail, err := memAvailable("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	if c, ok := cgroupAvailable(); ok && c < avail {
		avail = c
	}
	return avail, nil
}

// memAvailable reads MemAvailable (in kB) from a meminfo file.
func memAvailable(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("lifecycle: memory: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "MemAvailable:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("lifecycle: memory: MemAvailable %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("lifecycle: memory: no MemAvailable in " + path)
}

// cgroupAvailable returns limit minus non-reclaimable usage of the
// gateway's own memory cgroup, when it has a limit.
func cgroupAvailable() (int64, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "" && isCgroup2("/sys/fs/cgroup"):
			dir := filepath.Join("/sys/fs/cgroup", parts[2])
			if a, ok := cgroupRoom(dir, "memory.max", "memory.current", "inactive_file"); ok {
				return a, true
			}
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			// Inside a cgroup namespace the mount's root is our own group.
			for _, dir := range []string{filepath.Join("/sys/fs/cgroup/memory", parts[2]), "/sys/fs/cgroup/memory"} {
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
	limit, err := readInt(filepath.Join(dir, limitFile))
	if err != nil || limit >= 1<<60 {
		return 0, false
	}
	usage, err := readInt(filepath.Join(dir, usageFile))
	if err != nil {
		return 0, false
	}
	usage -= statValue(filepath.Join(dir, "memory.stat"), inactiveKey)
	return max(limit-max(usage, 0), 0), true
}

// readInt reads a file holding one integer ("max" is an error).
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
}

// statValue returns key's value in a cgroup memory.stat file, or 0.
func statValue(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
