package netns

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrHidden reports namespaces of this instance whose mounts lie under a
// later mount of RunDir that GC may not remove (see GC).
var ErrHidden = errors.New("hidden under a later mount of " + RunDir)

// mountEntry is what GC needs of one line of /proc/self/mountinfo.
type mountEntry struct {
	id, parent int
	point      string // mount point, unescaped
}

// readMounts returns the mounts at RunDir and directly inside it.
func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - type source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		point := unescapeMountPoint(fields[4])
		if point != RunDir && !strings.HasPrefix(point, RunDir+"/") {
			continue
		}
		id, err1 := strconv.Atoi(fields[0])
		parent, err2 := strconv.Atoi(fields[1])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, mountEntry{id: id, parent: parent, point: point})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("netns: read mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountPoint undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountPoint(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// runDirLayers returns the ids of the mounts stacked at RunDir, lowest
// first (each later one's parent is the one below it).
func runDirLayers(mounts []mountEntry) []int {
	at := map[int]int{} // parent id -> id, of the mounts at RunDir
	ids := map[int]bool{}
	for _, e := range mounts {
		if e.point == RunDir {
			at[e.parent] = e.id
			ids[e.id] = true
		}
	}
	var layers []int
	for parent, id := range at {
		if !ids[parent] { // the lowest: its parent is not a layer
			for ok := true; ok; id, ok = at[id] {
				layers = append(layers, id)
			}
			break
		}
	}
	return layers
}

// revealHidden deals with the state an `ip netns add` (or CNI, Docker)
// leaves when it ran while an envgate without ensureRunDir, or another
// program, had namespaces in RunDir while it was no mount point: the
// originals of those mounts lie in a lower layer, out of reach. A layer
// above hidden namespaces of this prefix is removed when it holds nothing
// but this prefix's mounts that GC removes anyway: those (copies, mostly)
// are unmounted, then the layer, with a plain umount that the kernel
// refuses while anything else is mounted in it or uses it. A layer that
// holds another program's namespace, or one keep names, stays: the
// returned error wraps ErrHidden and names what is in the way.
func (m *Manager) revealHidden(keep map[string]bool) error {
	for range 8 { // a bound: each pass removes one layer or returns
		mounts, err := readMounts()
		if err != nil {
			return err
		}
		layers := runDirLayers(mounts)
		if len(layers) == 0 {
			return nil
		}
		top := layers[len(layers)-1]
		byID := map[int]mountEntry{}
		for _, e := range mounts {
			byID[e.id] = e
		}
		var hidden, inTop, others []string
		for _, e := range mounts {
			name := strings.TrimPrefix(e.point, RunDir+"/")
			if e.point == RunDir || strings.Contains(name, "/") {
				continue
			}
			// Below a stack of mounts at the same name is the layer
			// this one lives in.
			under := e.parent
			for p, ok := byID[under]; ok && p.point == e.point; p, ok = byID[under] {
				under = p.parent
			}
			id, ours := idFromNsName(m.prefix, name)
			switch {
			case under != top && ours:
				hidden = append(hidden, name)
			case under != top:
			case e.parent != top:
				// stacked on a mount in the top layer: goes with it
			case ours && !keep[id]:
				inTop = append(inTop, name)
			default:
				others = append(others, name)
			}
		}
		if len(hidden) == 0 {
			return nil
		}
		slices.Sort(hidden)
		hidden = slices.Compact(hidden)
		if len(others) > 0 {
			slices.Sort(others)
			return fmt.Errorf("netns: gc: %s %w, which also holds %s: remove those (ip netns del) or unmount %s, then run gc again",
				strings.Join(hidden, " "), ErrHidden, strings.Join(slices.Compact(others), " "), RunDir)
		}
		for _, name := range inTop {
			// Until the path is no mount point (EINVAL): mounts stacked
			// on one name go too.
			for range 8 {
				err := unix.Unmount(RunDir+"/"+name, unix.MNT_DETACH)
				if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
					break
				}
				if err != nil {
					return fmt.Errorf("netns: gc: unmount %s: %w", name, err)
				}
			}
		}
		if err := unix.Unmount(RunDir, 0); err != nil {
			return fmt.Errorf("netns: gc: %s %w; removing that layer: %v", strings.Join(hidden, " "), ErrHidden, err)
		}
		forgetRunDir()
	}
	return fmt.Errorf("netns: gc: %w: too many layers", ErrHidden)
}
