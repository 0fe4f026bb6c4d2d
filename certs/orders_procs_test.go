package certs

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// ledgerChildEnv, set in a child process of TestOrderLedgerProcesses,
// names the state dir whose ledger the child takes slots from.
const ledgerChildEnv = "ENVGATE_TEST_LEDGER_DIR"

// TestOrderLedgerProcesses: three processes share one order ledger, as
// the three gateways of a cluster share state_dir. Each tries for more
// slots than its share of the weekly cap, from 8 goroutines, all at once:
// together they get exactly the cap, and the file records each slot
// given. A ledger that counted from its own stale copy would give more,
// and one that lost a write would record fewer.
func TestOrderLedgerProcesses(t *testing.T) {
	if dir := os.Getenv(ledgerChildEnv); dir != "" {
		ledgerChild(dir)
		return
	}
	const procs, max, tries = 3, 60, 50
	dir := t.TempDir()
	type child struct {
		cmd   *exec.Cmd
		start io.WriteCloser
		out   strings.Builder
	}
	children := make([]*child, procs)
	for i := range children {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestOrderLedgerProcesses$")}
		c.cmd.Env = append(os.Environ(), ledgerChildEnv+"="+dir, "ENVGATE_TEST_LEDGER_MAX="+strconv.Itoa(max), "ENVGATE_TEST_LEDGER_TRIES="+strconv.Itoa(tries))
		c.cmd.Stdout = &c.out
		c.cmd.Stderr = os.Stderr
		var err error
		if c.start, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
		children[i] = c
	}
	// All are started: let them go at once (each waits for its stdin to close).
	for _, c := range children {
		c.start.Close()
	}
	granted := 0
	for i, c := range children {
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, c.out.String())
		}
		var n int
		if _, err := fmt.Sscanf(c.out.String(), "granted %d", &n); err != nil {
			t.Fatalf("child %d said %q", i, c.out.String())
		}
		t.Logf("process %d got %d slots of %d tried", i, n, tries)
		if n == 0 || n == tries {
			t.Logf("process %d got none or all it tried: the processes may not have overlapped", i)
		}
		granted += n
	}
	if granted != max {
		t.Errorf("the %d processes got %d slots together, want the cap, %d", procs, granted, max)
	}
	l, err := newOrderLedger(dir, max, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := l.count(time.Now(), "x.dev.example.com"); err != nil || n != max {
		t.Errorf("the ledger records %d orders (%v), want %d", n, err, max)
	}
}

// ledgerChild is the child's part: it waits for its stdin to close, then
// takes slots from 8 goroutines and prints how many it got.
func ledgerChild(dir string) {
	max, _ := strconv.Atoi(os.Getenv("ENVGATE_TEST_LEDGER_MAX"))
	tries, _ := strconv.Atoi(os.Getenv("ENVGATE_TEST_LEDGER_TRIES"))
	l, err := newOrderLedger(dir, max, zerolog.Nop())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	io.Copy(io.Discard, os.Stdin)
	var mu sync.Mutex
	granted := 0
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < tries; i += 8 {
				if l.take(context.Background(), time.Now(), fmt.Sprintf("e%d-%d.dev.example.com", os.Getpid(), i)) {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	fmt.Printf("granted %d\n", granted)
	os.Exit(0)
}
