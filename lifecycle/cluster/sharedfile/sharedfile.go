// Package sharedfile keeps the small files of state_dir that several
// writers change at once: the goroutines of one gateway, and the nodes
// of a cluster, which share state_dir (previews-prs.json,
// webhook-deliveries).
//
// The file is the only copy. A change reads it, applies itself and
// writes it back (a new file, synced, renamed over the old one), all
// under an exclusive flock of a side file, <file>.lock: so changes made
// at the same time by any number of processes, on any node, apply one
// after the other and none is lost. A read reads the file whole, without
// the lock: the rename is atomic, so it sees one version or the next,
// never a mixture. The filesystem must honour flock between machines, as
// the fencing of data dirs already requires (NFS does, through its lock
// manager). Each change reads and rewrites the whole file: this is for
// files of kilobytes changed at the rate of webhooks, not for a hot path.
//
// Lock is the same flock alone, for work that changes other files than
// the lock's own (the git mirror: git's commands on it wait for each
// other instead of failing on git's own lock files).
//
// Create makes a file once, for files written once and then only read
// (the share key), with no lock.
//
// It knows nothing of what the files hold.
package sharedfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Read returns the content of the file at path; a missing file is empty
// (nil, no error).
func Read(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// Update calls change with the content of the file at path (nil if there
// is none) and replaces the file with what change returns, all under an
// exclusive flock of path+".lock". If change fails, or returns the same
// content, the file is left as it is; change's error is returned as is.
// The file is written mode 0600; its directory is made (0711) if
// missing.
//
// change runs with the lock held: it must not call Update on the same
// file.
func Update(path string, change func(old []byte) ([]byte, error)) error {
	unlock, err := Lock(context.Background(), path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	old, err := Read(path)
	if err != nil {
		return fmt.Errorf("sharedfile: %w", err)
	}
	b, err := change(old)
	if err != nil {
		return err
	}
	if bytes.Equal(b, old) {
		return nil
	}
	return write(path, b)
}

// ErrHeld is the error of a Lock whose context ended while another open
// file (another process, another node, or another Lock call of this
// process) held the lock.
var ErrHeld = errors.New("held by another holder")

// Lock takes the exclusive flock of the file at path, made (0600, its
// directory 0711) if missing, and returns the function that lets it go.
// flock locks belong to open files: two Lock calls of one process
// exclude each other as two processes do. Without a deadline or
// cancellation on ctx, Lock waits as long as it takes; else it tries
// again, at growing intervals up to 50ms, until ctx ends, and then
// returns an error wrapping ErrHeld and ctx's cause. The lock is no
// queue: when it is let go, any waiter may get it next.
func Lock(ctx context.Context, path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("sharedfile: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sharedfile: %w", err)
	}
	if err := flock(ctx, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("sharedfile: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the file lets the lock go
}

func flock(ctx context.Context, f *os.File) error {
	fd := int(f.Fd())
	if ctx.Done() == nil {
		return syscall.Flock(fd, syscall.LOCK_EX)
	}
	// A blocking flock cannot be cancelled, so it is tried without
	// blocking until ctx ends.
	wait := time.Millisecond
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrHeld, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// write writes b to a new file beside path, syncs it and renames it over
// path, so a crash, and a reader, see one or the other whole.
func write(path string, b []byte) error {
	tmp, err := temp(path, b)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sharedfile: %w", err)
	}
	return nil
}

// Create makes the file at path with content b (mode 0600) unless one is
// there already (an error wrapping fs.ErrExist), with no lock: b is
// written whole to a new file beside path and then linked to path, so
// processes that create the same file at once all find the first one
// whole, and none replaces another's.
func Create(path string, b []byte) error {
	tmp, err := temp(path, b)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("sharedfile: %w", err)
	}
	return nil
}

// temp writes b to a new file (mode 0600) beside path, synced, and
// returns its name.
func temp(path string, b []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return "", fmt.Errorf("sharedfile: %w", err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("sharedfile: write %s: %w", path, err)
	}
	return f.Name(), nil
}
