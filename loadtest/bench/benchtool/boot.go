package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
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
	// Answer (with -get) is exec to the first byte of the answer to a GET
	// sent, on a new connection, as soon as that line was read: what a
	// client that started the server itself would wait at best.
	Answer Summary `json:"answer_ms"`
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
	get := fs.String("get", "", "also GET this path from the address in the \"listening on\" line and time its first byte")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return nil, errors.New("boot: want -- COMMAND [ARGS...]")
	}
	var ds, as []time.Duration
	for range *n {
		d, a, err := bootOnce(argv, *get, *timeout)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		if *get != "" {
			as = append(as, a)
		}
	}
	return &BootResult{Command: argv, Boot: summarize(ds), Answer: summarize(as)}, nil
}

// bootOnce runs argv once and returns the time to its "listening on" line
// and, with path set, to the first byte of its answer to GET path.
func bootOnce(argv []string, path string, timeout time.Duration) (listening, answer time.Duration, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, 0, fmt.Errorf("boot: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, 0, fmt.Errorf("boot: %w", err)
	}
	w.Close()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()

	type seen struct {
		at   time.Time
		addr string // after the mark
		err  error
	}
	ch := make(chan seen, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if _, addr, ok := strings.Cut(sc.Text(), listeningMark); ok {
				ch <- seen{at: time.Now(), addr: strings.TrimSpace(addr)}
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
			return 0, 0, s.err
		}
		if path == "" {
			return s.at.Sub(began), 0, nil
		}
		if err := firstByte(s.addr, path, timeout); err != nil {
			return 0, 0, fmt.Errorf("boot: GET %s from %s: %w", path, s.addr, err)
		}
		return s.at.Sub(began), time.Since(began), nil
	case <-t.C:
		return 0, 0, fmt.Errorf("boot: %q did not listen within %s", argv[0], timeout)
	}
}

// firstByte sends GET path to addr on a new connection and waits for the
// first byte of the answer.
func firstByte(addr, path string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: boot\r\nConnection: close\r\n\r\n", path); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}
