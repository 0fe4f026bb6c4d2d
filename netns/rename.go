package netns

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Rename gives sandbox sb the ID id: its namespace is bind-mounted under
// the new name, then the old name is removed. The veth, addresses and
// processes are untouched, so a sandbox made ahead of time (a warm spare)
// can become an env's in microseconds, and `ip netns` still shows env
// names. A crash between the two steps leaves both names on one
// namespace; GC removes whichever is not kept.
func (m *Manager) Rename(sb *Sandbox, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	if err := ensureRunDir(); err != nil {
		return err
	}
	name := nsName(m.prefix, id)
	path := filepath.Join(RunDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("netns: rename %s to %s: %w", sb.Name, name, err)
	}
	f.Close()
	if err := unix.Mount(sb.Path(), path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("netns: rename %s to %s: bind mount: %w", sb.Name, name, err)
	}
	old := sb.Name
	sb.ID, sb.Name = id, name
	if err := deleteNamed(old); err != nil {
		// The sandbox has its new name; the old one is left for GC.
		return fmt.Errorf("netns: rename %s to %s: %w", old, name, err)
	}
	return nil
}
