package devserver

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns/netnstest/wait"

	"github.com/rs/zerolog"
)

// TestDiskLogRotationCapsSize writes 5 MiB of output through the pump
// into a log capped at 1 MiB with one backup: the live file and the
// backup stay under the cap, older output is dropped, every line carries
// its time, and the pump closes the file when the output ends.
func TestDiskLogRotationCapsSize(t *testing.T) {
	dir := t.TempDir()
	d := newDiskLog(dir, "web", 1, 1)
	buf := new(lifecycle.Output)
	r, w := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pump(r, buf, d, zerolog.Nop(), nil)
	}()
	line := bytes.Repeat([]byte("x"), 1000)
	for range 5 << 10 {
		w.Write(append(line, '\n'))
	}
	w.Write([]byte("last line\n"))
	w.Close()
	<-done

	d.mu.Lock()
	open := d.f != nil || fileOpen(d.path)
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
	if len(ents) != 2 || ents[0].Name() != "web.log" || ents[1].Name() != "web.log.1" {
		t.Errorf("files %v, want web.log and web.log.1", ents)
	}
	// Under the cap, but not far under: older output was dropped, not
	// more than that.
	if total < 1<<20 || total > 2<<20 {
		t.Errorf("%d bytes in all, want between 1 and 2 MiB", total)
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
	if _, err := time.Parse(lifecycle.LogTimeFormat, l[:len(lifecycle.LogTimeFormat)]); err != nil {
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
	for _, n := range []string{"a.log", "a.log.1", "a.log.2", "a-2026-01-02T03-04-05.000.log", "a-b.log", "a-b.log.1", "a-b-2026-01-02T03-04-05.000.log"} {
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
	if strings.Join(left, " ") != "a-b-2026-01-02T03-04-05.000.log a-b.log a-b.log.1" {
		t.Errorf("left %v", left)
	}
}

// TestDiskLogRotatesInOrderAndOnReopen: backups hold older lines than the
// live file, .2 older than .1; a file already at its cap when it is
// opened again (a restarted env) is rotated before the first new line.
func TestDiskLogRotatesInOrderAndOnReopen(t *testing.T) {
	dir := t.TempDir()
	d := newDiskLog(dir, "web", 1, 2)
	line := bytes.Repeat([]byte("y"), 1000)
	now := time.Now()
	n := 0
	for ; n < 3000; n++ {
		d.writeLine(now, fmt.Appendf(line[:0:0], "%s %06d", line, n))
	}
	d.close()
	seq := func(name string) (first, last int) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		num := func(l string) int {
			v, err := strconv.Atoi(l[max(0, len(l)-6):])
			if err != nil {
				t.Fatalf("%s: a line ends in %q", name, l[max(0, len(l)-6):])
			}
			return v
		}
		return num(lines[0]), num(lines[len(lines)-1])
	}
	f2, l2 := seq("web.log.2")
	f1, l1 := seq("web.log.1")
	f0, l0 := seq("web.log")
	if l2+1 != f1 || l1+1 != f0 || l0 != n-1 || f2 > l2 {
		t.Errorf("lines .2 %d-%d, .1 %d-%d, live %d-%d: want consecutive up to %d", f2, l2, f1, l1, f0, l0, n-1)
	}

	// Fill the live file to its cap, then open it again.
	fi, _ := os.Stat(filepath.Join(dir, "web.log"))
	pad := bytes.Repeat([]byte("z"), int(1<<20-fi.Size()))
	copy(pad[len(pad)-8:], " 999999\n")
	f, _ := os.OpenFile(filepath.Join(dir, "web.log"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(pad)
	f.Close()
	d.writeLine(now, []byte("after restart"))
	d.close()
	b, _ := os.ReadFile(filepath.Join(dir, "web.log"))
	if !strings.HasSuffix(strings.TrimSpace(string(b)), " after restart") || len(b) > 100 {
		t.Errorf("live file after reopening a full one: %d bytes, %q...", len(b), b[:min(len(b), 40)])
	}
	if g1, _ := seq("web.log.1"); g1 != f0 {
		t.Errorf("the full file did not become .1 (.1 holds lines from %d, want %d)", g1, f0)
	}
	if g2, _ := seq("web.log.2"); g2 != f1 {
		t.Errorf("the old .1 did not become .2 (.2 holds lines from %d, want %d)", g2, f1)
	}
}

// TestDiskLogClosesWhenIdle: the file is closed once no line came for
// the idle time, and the next line opens it again and appends.
func TestDiskLogClosesWhenIdle(t *testing.T) {
	dir := t.TempDir()
	d := newDiskLog(dir, "web", 1, 1)
	t.Cleanup(d.close)
	d.idle = 20 * time.Millisecond
	open := func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.f != nil
	}
	d.writeLine(time.Now(), []byte("one"))
	if !open() {
		t.Fatal("file closed right after a line")
	}
	wait.For(t, 10*time.Second, "the idle log file to be closed", func() bool { return !open() })
	d.writeLine(time.Now(), []byte("two"))
	if !open() {
		t.Fatal("file not opened again by the next line")
	}
	b, err := os.ReadFile(filepath.Join(dir, "web.log"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); strings.Count(got, "\n") != 2 || !strings.Contains(got, " one\n") || !strings.HasSuffix(got, " two\n") {
		t.Errorf("log file:\n%s\nwant the lines one and two", got)
	}
	d.close()
	if open() {
		t.Error("file open after close")
	}
}
