package demo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// visitsFile is the counter's file name inside DataDir.
const visitsFile = "visits"

// visitCounter counts page views, persisting the count in dir/visits when
// dir is set so it survives a restart of the server (and a reap of the env).
type visitCounter struct {
	dir string // "" keeps the count in memory only

	// mu is held across the file write, not only the increment: writes
	// that overtook each other could leave a smaller count on disk than
	// the one already served.
	mu sync.Mutex
	n  uint64 // guarded by mu; the last count served (and stored)
}

// openVisits loads the count from dir/visits, creating dir if needed.
func openVisits(dir string) (*visitCounter, error) {
	v := &visitCounter{dir: dir}
	if dir == "" {
		return v, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("demo: create data dir: %w", err)
	}
	// A crash between CreateTemp and Rename leaves a temp file behind.
	if stale, err := filepath.Glob(filepath.Join(dir, "."+visitsFile+"-*.tmp")); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	path := filepath.Join(dir, visitsFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return v, nil
	case err != nil:
		return nil, fmt.Errorf("demo: read visit counter: %w", err)
	}
	v.n, err = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("demo: visit counter %s is corrupt (delete it to start from 0): %w", path, err)
	}
	return v, nil
}

// next counts one visit and returns the new count. If the count cannot be
// stored, it is not counted.
func (v *visitCounter) next() (uint64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := v.n + 1
	if v.dir != "" {
		if err := writeFileAtomic(v.dir, visitsFile, []byte(strconv.FormatUint(n, 10)+"\n")); err != nil {
			return 0, fmt.Errorf("demo: store visit count: %w", err)
		}
	}
	v.n = n
	return n, nil
}

// writeFileAtomic replaces dir/name with data so a reader (or a crash) sees
// the old content or the new, never a torn write. It does not fsync: the
// count must survive the process, not a power cut, and an fsync per page
// view would make the page slow under load tests.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+"-*.tmp")
	if err != nil {
		return err
	}
	success := false
	defer func() {
		if !success {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; the count is no secret.
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	success = true
	return nil
}
