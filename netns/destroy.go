package netns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// destroyParallel bounds the goroutines that delete namespaces in
// DestroyAll: each unmount takes the kernel's mount lock, so more would
// only queue there. More do unmount sooner (BenchmarkDestroyAll1000: 1,000
// in 0.52 s with 4, 0.31 s with 16, 0.33 s with 64), but the kernel's
// namespace cleanup, which removes the veths after, is the longer part and
// is not sped up: all veths were gone after 1.07, 1.16 and 1.21 s. A
// variable only for that benchmark.
var destroyParallel = 4

// DestroyAll is Destroy for every sandbox of sbs, done together: one scan
// of /proc finds the processes of all their namespaces (Destroy's scan,
// once per sandbox, made stopping N sandboxes cost N scans of every
// process on the machine), then the namespaces are deleted and the kernel
// takes their veths in batches. It continues past failures and reports
// them all.
func (m *Manager) DestroyAll(sbs []*Sandbox) error {
	paths := make([]string, len(sbs))
	for i, sb := range sbs {
		paths[i] = sb.Path()
	}
	var errs []error
	killErr := killNamespaces(paths, 5*time.Second)
	if killErr != nil {
		errs = append(errs, killErr)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan *Sandbox)
	for range min(len(sbs), destroyParallel) {
		wg.Go(func() {
			for sb := range next {
				// Its processes are gone, or killErr says why not (it is
				// reported once, above).
				if err := m.destroy(sb, nil); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, sb := range sbs {
		next <- sb
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// killNamespaces SIGKILLs every process in the namespaces bound at paths
// and waits (bounded) until none is left, scanning /proc once per round
// for all of them.
func killNamespaces(paths []string, wait time.Duration) error {
	inos := make(map[uint64]string, len(paths))
	for _, p := range paths {
		ino, err := nsInode(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netns: kill in %s: %w", p, err)
		}
		inos[ino] = p
	}
	if len(inos) == 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	for {
		pids, err := pidsWithNetInodes(inos)
		if err != nil {
			return fmt.Errorf("netns: kill: %w", err)
		}
		live := 0
		for _, pid := range pids {
			if isZombie(pid) {
				continue // dead; its parent reaps it
			}
			live++
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("netns: kill %d: %w", pid, err)
			}
		}
		if live == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: %d processes still in %d namespaces after %s", live, len(inos), wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pidsWithNetInodes lists the processes whose network namespace is one
// of inos.
func pidsWithNetInodes(inos map[uint64]string) ([]int, error) {
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
	var st syscall.Stat_t
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if syscall.Stat("/proc/"+n+"/ns/net", &st) != nil {
			continue // exited, or a kernel thread
		}
		if _, ok := inos[st.Ino]; ok {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
