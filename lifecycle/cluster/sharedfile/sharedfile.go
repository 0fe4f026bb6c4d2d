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
// It knows nothing of what the files hold.
package sharedfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
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
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return fmt.Errorf("sharedfile: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("sharedfile: %w", err)
	}
	defer lock.Close() // unlocks
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("sharedfile: lock %s: %w", lock.Name(), err)
	}
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

// write writes b to a new file beside path, syncs it and renames it over
// path, so a crash, and a reader, see one or the other whole.
func write(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("sharedfile: %w", err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("sharedfile: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("sharedfile: %w", err)
	}
	return nil
}
