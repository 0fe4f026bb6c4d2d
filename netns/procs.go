package netns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nsInode returns the inode that identifies the namespace bound at path.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// PidsIn lists the processes whose network namespace is the one bound at
// nsPath, the way `ip netns pids` does: by comparing /proc/PID/ns/net.
func PidsIn(nsPath string) ([]int, error) {
	ino, err := nsInode(nsPath)
	if err != nil {
		return nil, fmt.Errorf("netns: pids in %s: %w", nsPath, err)
	}
	return pidsWithNetInode(ino)
}

func pidsWithNetInode(ino uint64) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+n+"/ns/net", &st) != nil {
			continue // exited, or a kernel thread
		}
		if st.Ino == ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNamespace SIGKILLs every process in the namespace bound at nsPath and
// waits (bounded) until none is left, so deleting the namespace afterwards
// does not leave a process running in an unreachable namespace. Processes
// forked while we kill are caught by the repeated scan.
func killNamespace(nsPath string, wait time.Duration) error {
	ino, err := nsInode(nsPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netns: kill in %s: %w", nsPath, err)
	}
	deadline := time.Now().Add(wait)
	for {
		pids, err := pidsWithNetInode(ino)
		if err != nil {
			return fmt.Errorf("netns: kill in %s: %w", nsPath, err)
		}
		live := 0
		for _, pid := range pids {
			if isZombie(pid) {
				continue // dead; its parent reaps it
			}
			live++
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("netns: kill %d in %s: %w", pid, nsPath, err)
			}
		}
		if live == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: %d processes still in %s after %s", live, nsPath, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isZombie reports whether pid has exited and awaits its parent's wait.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone
	}
	// The state follows the parenthesised command name, which may itself
	// contain ") ", so search from the last one.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
		}
	}
	return false
}
