package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrFenced means a newer owner has already claimed the env's data dir:
// this node's claim is stale and it must not start the env.
var ErrFenced = errors.New("cluster: a newer owner holds the env's data dir")

// Fence records token (the owner key's revision) as the newest claim on
// env's data dir, in dir/<env>.token on the shared filesystem, under an
// flock. It fails with ErrFenced when a newer token is already recorded,
// so a stale owner (one whose session ended while it was paused) never
// starts the env over a data dir that moved on.
func Fence(dir, env string, token int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster: fence dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, env+".token"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: fence %s: %w", env, err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("cluster: fence %s: lock: %w", env, err)
	}
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if s := strings.TrimSpace(string(b[:n])); s != "" {
		if old, err := strconv.ParseInt(s, 10, 64); err == nil && old > token {
			return fmt.Errorf("%w: env %s has token %d, this node's is %d", ErrFenced, env, old, token)
		}
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("cluster: fence %s: %w", env, err)
	}
	if _, err := f.WriteAt([]byte(strconv.FormatInt(token, 10)+"\n"), 0); err != nil {
		return fmt.Errorf("cluster: fence %s: %w", env, err)
	}
	return f.Sync()
}
