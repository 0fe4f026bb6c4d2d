package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// BootResult is what `benchtool boot` prints.
type BootResult struct {
	Command []string `json:"command"`
	// Boot is exec (just before fork) to the moment the server's
	// "listening on" line was read from its output pipe.
	Boot Summary `json:"boot_ms"`
}

// listeningMark is what the demo server (and anything imitating it)
// prints once its listener is open.
const listeningMark = " listening on "

// runBoot execs a dev server n times, one at a time, and times each from
// exec to its "listening on" line: the part of a cold start that is the
// server's own, which the cold-start benchmark subtracts from the
// gateway's time to first byte.
func runBoot(args []string) (*BootResult, error) {
	fs := flag.NewFlagSet("boot", flag.ContinueOnError)
	n := fs.Int("n", 100, "number of boots")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on one boot after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return nil, errors.New("boot: want -- COMMAND [ARGS...]")
	}
	var ds []time.Duration
	for range *n {
		d, err := bootOnce(argv, *timeout)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return &BootResult{Command: argv, Boot: summarize(ds)}, nil
}

func bootOnce(argv []string, timeout time.Duration) (time.Duration, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("boot: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("boot: %w", err)
	}
	w.Close()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()

	type seen struct {
		at  time.Time
		err error
	}
	ch := make(chan seen, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), listeningMark) {
				ch <- seen{at: time.Now()}
				io.Copy(io.Discard, r) // keep the pipe drained until exit
				return
			}
		}
		ch <- seen{err: fmt.Errorf("boot: %q exited without printing %q", argv[0], strings.TrimSpace(listeningMark))}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case s := <-ch:
		if s.err != nil {
			return 0, s.err
		}
		return s.at.Sub(began), nil
	case <-t.C:
		return 0, fmt.Errorf("boot: %q did not listen within %s", argv[0], timeout)
	}
}
