package sharedfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestUpdate: a missing file reads empty and is made 0600; a failed
// change, and one that returns the same content, leave the file as it
// was (not even rewritten).
func TestUpdate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "f")
	if b, err := Read(path); err != nil || b != nil {
		t.Fatalf("Read of a missing file: %q, %v", b, err)
	}
	if err := Update(path, func(old []byte) ([]byte, error) {
		if old != nil {
			t.Errorf("old content of a missing file: %q", old)
		}
		return []byte("one\n"), nil
	}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v; want 0600", path, err, fi.Mode().Perm())
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	boom := errors.New("boom")
	if err := Update(path, func([]byte) ([]byte, error) { return []byte("two\n"), boom }); err != boom {
		t.Errorf("failed change: %v, want its error as is", err)
	}
	if err := Update(path, func(old []byte) ([]byte, error) { return append([]byte(nil), old...), nil }); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(path); err != nil || string(b) != "one\n" {
		t.Errorf("after a failed and an empty change: %q, %v; want %q", b, err, "one\n")
	}
	if fi, err := os.Stat(path); err != nil || fi.Sys().(*syscall.Stat_t).Ino != ino {
		t.Errorf("the file was replaced by a change that changed nothing (%v)", err)
	}
	tmps, _ := filepath.Glob(path + ".*")
	if len(tmps) != 1 || tmps[0] != path+".lock" {
		t.Errorf("files beside %s: %v, want the lock file alone", path, tmps)
	}
}

// TestUpdateLosesNone: goroutines that each open the lock file exclude
// each other (flock locks belong to open files, so this is the case of
// several processes too): a counter incremented by all is exact.
func TestUpdateLosesNone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "count")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				err := Update(path, func(old []byte) ([]byte, error) {
					n, _ := strconv.Atoi(string(old))
					return strconv.AppendInt(nil, int64(n+1), 10), nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b, err := Read(path); err != nil || string(b) != strconv.Itoa(workers*each) {
		t.Errorf("counter %q (%v), want %d", b, err, workers*each)
	}
}

// TestLockWaitBounded: a Lock whose context ends while another open file
// holds the lock fails with ErrHeld and the context's cause, and holds
// nothing; once the holder lets go, the next Lock gets it.
func TestLockWaitBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "repo.lock")
	unlock, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	slow := errors.New("the holder is slow")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, slow)
	defer cancel()
	if _, err := Lock(ctx, path); !errors.Is(err, ErrHeld) || !errors.Is(err, slow) {
		t.Fatalf("Lock while held: %v, want ErrHeld and the context's cause", err)
	}
	unlock()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unlock, err = Lock(ctx, path)
	if err != nil {
		t.Fatalf("Lock after the holder let go: %v", err)
	}
	unlock()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want mode 0600", fi, err)
	}
}
