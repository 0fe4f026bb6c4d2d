package devserver

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// poolBlock is this package's netnstest.Pool block (lifecycle's tests,
// which run beside these, have 1).
const poolBlock = 8

func TestCheckRecordedRefusesLowPids(t *testing.T) {
	for _, pid := range []int{-1, 0, 1} {
		err := checkRecorded(lifecycle.ProcessRecord{Pid: pid, Namespace: "/run/netns/whatever"})
		if !errors.Is(err, lifecycle.ErrRecordRefused) {
			t.Errorf("pid %d: %v; want ErrRecordRefused", pid, err)
		}
	}
}

// sleeper starts `sleep 60` (in sb's namespace unless sb is nil), in a
// process group of its own when ownGroup, and stops it when the test ends.
func sleeper(t *testing.T, sb *netns.Sandbox, ownGroup bool) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: ownGroup}
	var err error
	if sb != nil {
		err = sb.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// A record is acted on only for a process inside the namespace it names,
// a namespace that is not the gateway's, and leading its process group:
// a real process in a real namespace passes, one outside it does not.
func TestCheckRecordedNamespace(t *testing.T) {
	nsm, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netnstest.Pool(poolBlock)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := nsm.Create(ctx, "rec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsm.Destroy(sb) })
	other, err := nsm.Create(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsm.Destroy(other) })

	inside := sleeper(t, sb, true)
	insideNoGroup := sleeper(t, sb, false)
	outside := sleeper(t, nil, true)
	for _, tc := range []struct {
		name, ns string
		pid      int
		want     string // "" : accepted
	}{
		{"inside its recorded namespace", sb.Path(), inside, ""},
		{"outside, recording the env's namespace", sb.Path(), outside, "not in the recorded namespace"},
		{"inside another env's namespace", other.Path(), inside, "not in the recorded namespace"},
		{"the gateway's namespace recorded", "/proc/self/ns/net", outside, "the gateway's own"},
		{"no namespace recorded", "", inside, "no network namespace recorded"},
		{"namespace gone", sb.Path() + "-gone", inside, "recorded namespace"},
		{"not leading its group", sb.Path(), insideNoGroup, "does not lead its process group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRecorded(lifecycle.ProcessRecord{Pid: tc.pid, Namespace: tc.ns})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (!errors.Is(err, lifecycle.ErrRecordRefused) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("%v; want ErrRecordRefused saying %q", err, tc.want)
			}
		})
	}
}
