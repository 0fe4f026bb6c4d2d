package lifecycle

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestDiskLogRotationCapsSize writes 5 MiB of output through the pump
// into a log capped at 1 MiB with one backup: the live file and the
// backup stay under the cap, older output is dropped, every line carries
// its time, and the pump closes the file when the output ends.
func TestDiskLogRotationCapsSize(t *testing.T) {
	dir := t.TempDir()
	d := newDiskLog(dir, "web", 1, 1)
	buf := newOutputBuffer()
	buf.disk = d
	r, w := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pump(r, buf, zerolog.Nop(), nil)
	}()
	line := bytes.Repeat([]byte("x"), 1000)
	for range 5 << 10 {
		w.Write(append(line, '\n'))
	}
	w.Write([]byte("last line\n"))
	w.Close()
	<-done

	d.mu.Lock()
	open := d.lj != nil && fileOpen(d.lj.Filename)
	d.mu.Unlock()
	if open {
		t.Error("log file still open after the output ended")
	}
	ents, _ := os.ReadDir(dir)
	var total int64
	for _, e := range ents {
		fi, _ := e.Info()
		total += fi.Size()
		if fi.Size() > 1<<20 {
			t.Errorf("%s: %d bytes, over the 1 MiB cap", e.Name(), fi.Size())
		}
	}
	// Lumberjack removes surplus backups in the background.
	for deadline := time.Now().Add(5 * time.Second); len(ents) > 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		ents, _ = os.ReadDir(dir)
	}
	if len(ents) != 2 {
		t.Errorf("%d files, want the log and 1 backup", len(ents))
	}
	b, err := os.ReadFile(filepath.Join(dir, "web.log"))
	if err != nil {
		t.Fatal(err)
	}
	last := strings.Split(strings.TrimSpace(string(b)), "\n")
	l := last[len(last)-1]
	if !strings.HasSuffix(l, " last line") {
		t.Errorf("last line %q", l)
	}
	if _, err := time.Parse(LogTimeFormat, l[:len(LogTimeFormat)]); err != nil {
		t.Errorf("line without its time: %q: %v", l, err)
	}
	if err := d.remove(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("after remove: %v", ents)
	}
}

// fileOpen says whether this process has path open.
func fileOpen(path string) bool {
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && p == path {
			return true
		}
	}
	return false
}

// TestDiskLogRemoveKeepsOtherEnvs: destroying env "a" leaves "a-b"'s logs.
func TestDiskLogRemoveKeepsOtherEnvs(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.log", "a-2026-01-02T03-04-05.000.log", "a-b.log", "a-b-2026-01-02T03-04-05.000.log"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x\n"), 0o600)
	}
	if err := newDiskLog(dir, "a", 1, 1).remove(); err != nil {
		t.Fatal(err)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "a-b-2026-01-02T03-04-05.000.log a-b.log" {
		t.Errorf("left %v", left)
	}
}
