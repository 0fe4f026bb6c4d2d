package netns_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"golang.org/x/sys/unix"
)

// threadNice is the nice value of thread tid of this process, from
// /proc (field 19 of its stat).
func threadNice(t *testing.T, tid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/self/task", strconv.Itoa(tid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, err := strconv.Atoi(fields[16]) // field 19; fields[0] is field 3
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSandboxMadeAtStartNice: a sandbox's namespace is made on a thread
// at StartNice, and afterwards no thread of the process keeps that
// priority (the request path runs on them).
func TestSandboxMadeAtStartNice(t *testing.T) {
	netnstest.RequireRoot(t)
	if netns.ProcessNice() >= netns.StartNice {
		t.Skipf("the test process runs at nice %d already", netns.ProcessNice())
	}
	name := netnstest.Prefix(t) + "-nice"
	inside := -100
	h, err := netns.CreateNamed(name, func() error {
		p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		inside = 20 - p
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Error(err)
		}
	})
	if inside != netns.StartNice {
		t.Errorf("the namespace was made at nice %d, want %d", inside, netns.StartNice)
	}

	m := newManager(t)
	t.Cleanup(func() { m.Settle(context.Background()) }) // after create's destroy
	create(t, m, "nice")
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if n := threadNice(t, tid); n != netns.ProcessNice() {
			t.Errorf("thread %d is at nice %d after a sandbox was made, want the process's %d", tid, n, netns.ProcessNice())
		}
	}
}
