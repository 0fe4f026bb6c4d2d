package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/loadtest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// TestRestartUnderLoad is the test 7: SIGHUP restarts the gateway
// in place while a steady load runs for 10s; no request fails, the envs
// keep running (no cold start after the restart), and a WebSocket opened
// before the restart still works after the new process has taken over.
func TestRestartUnderLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	instance, cfgPath, addr := testInstance(t, 4, "")
	g := startServe(t, cfgPath, addr)
	parent := g.cmd.Process.Pid
	pidPath := filepath.Join(filepath.Dir(cfgPath), "state", "run", instance+".pid")
	// Registered after startServe, so it runs first: the successor is no
	// child of ours and holds the log pipe that startServe's cleanup
	// waits on.
	t.Cleanup(func() { stopSuccessor(t, pidPath, parent) })

	hosts := []string{"e0.localhost", "e1.localhost", "e2.localhost", "e3.localhost"}
	for _, h := range hosts {
		if code, body, _ := g.get(t, h, "/"); code != 200 {
			t.Fatalf("warm %s: %d %s", h, code, body)
		}
	}
	waitFor(t, "pid file", func() bool { return readPid(pidPath) == parent })

	ws := dialWS(t, addr, "e0.localhost")
	echo := func(msg string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return err
		}
		_, b, err := ws.Read(ctx)
		if err == nil && !strings.Contains(string(b), msg) {
			t.Errorf("websocket echo %q, want it to contain %q", b, msg)
		}
		return err
	}
	if err := echo("before"); err != nil {
		t.Fatalf("websocket before the restart: %v", err)
	}

	type result struct {
		rep *loadtest.Report
		err error
	}
	done, ended := make(chan result, 1), make(chan struct{})
	progress := &pebbletest.Buffer{}
	go func() {
		rep, err := loadtest.Run(context.Background(), loadtest.Options{
			Addr: addr, HostList: hosts, Rate: 100, Duration: 10 * time.Second,
		}, progress)
		close(ended)
		done <- result{rep, err}
	}()
	// The restart comes once the old process has answered a second of the
	// load, and the new process takes over before the load ends.
	waitFor(t, "100 requests of the load answered", func() bool { return progressRequests(progress.String()) >= 100 })
	if err := syscall.Kill(parent, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var child int
	waitFor(t, "the new process's pid file", func() bool {
		child = readPid(pidPath)
		return child != 0 && child != parent
	})
	select {
	case <-ended:
		t.Fatal("the load ended before the new process took over: no restart under load")
	default:
	}
	// The old process is draining now (shutdown_timeout 5s): the
	// WebSocket it carries must still work.
	if err := echo("during the drain"); err != nil {
		t.Errorf("websocket failed once the new process took over, before the grace period: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	var failed int64
	for class, n := range r.rep.Errors {
		if n > 0 {
			t.Errorf("%d requests failed: %s", n, class)
			failed += n
		}
	}
	if r.rep.Requests < 900 || r.rep.OK != r.rep.Requests {
		t.Errorf("requests %d, ok %d; want about 1000, all ok", r.rep.Requests, r.rep.OK)
	}
	waitFor(t, "the old process to exit", func() bool { return !alive(parent) })
	for _, h := range hosts {
		code, _, hdr := g.get(t, h, "/")
		if code != 200 || hdr.Get(gateway.ColdStartHeader) != "" {
			t.Errorf("%s after the restart: %d, cold start %q; want 200 from the adopted env", h, code, hdr.Get(gateway.ColdStartHeader))
		}
	}
	if os.Getenv("ENVGATE_TEST_SHOWLOG") != "" {
		t.Log(g.log.String())
	}
	t.Logf("restart under load: %d requests, %d failed, p99 %.1fms", r.rep.Requests, failed, r.rep.Latency.Overall.P99)
}

func dialWS(t *testing.T, addr, host string) *websocket.Conn {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+host+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// progressRequests is the request count on the last status line that
// loadtest.Run wrote to its progress writer ("... requests 123 ..."), or
// 0 before the first.
func progressRequests(progress string) int {
	m := progressCount.FindAllStringSubmatch(progress, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

var progressCount = regexp.MustCompile(`requests (\d+)`)

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitFor polls cond, for what another process or a background
// goroutine does; the minute is a backstop for broken code.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, time.Minute, what, cond)
}

// stopSuccessor stops the process that took over from parent, if any, and
// waits for it to exit, so the leak check that follows sees its envs gone.
func stopSuccessor(t *testing.T, pidPath string, parent int) {
	pid := readPid(pidPath)
	if pid == 0 || pid == parent || !alive(pid) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if !wait.Until(time.Minute, func() bool { return !alive(pid) }) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("new gateway process %d did not stop on SIGTERM", pid)
	}
}

// TestSocketActivation: a socket passed the systemd way (LISTEN_FDS,
// LISTEN_PID) serves the configured address; envgate opens no socket of its
// own for it. As deploy/envgate.service runs it (Type=notify), it tells
// systemd's notify socket it is ready, and its pid.
func TestSocketActivation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	_, cfgPath, addr := testInstance(t, 4, "")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close() // f keeps the socket; nothing else listens on addr
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notifyPath := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	g := &gatewayProc{addr: addr, done: make(chan struct{}), log: &pebbletest.Buffer{}}
	// LISTEN_PID must be the pid of envgate itself: sh sets it, then execs.
	g.cmd = exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --config "$1" --log-format json`, envgateBinary(t), cfgPath)
	g.cmd.ExtraFiles = []*os.File{f} // fd 3, SD_LISTEN_FDS_START
	g.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		g.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.log.String())
		}
	})
	if code, body, _ := g.get(t, "sa.localhost", "/"); code != 200 {
		t.Fatalf("GET through the inherited socket: %d %s", code, body)
	}
	if !strings.Contains(g.log.String(), "using inherited listening sockets") {
		t.Errorf("the gateway did not say it used the inherited socket:\n%s", g.log.String())
	}
	notify.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	n, err := notify.Read(buf)
	if want := "READY=1\nMAINPID=" + strconv.Itoa(g.cmd.Process.Pid); err != nil || string(buf[:n]) != want {
		t.Errorf("sd_notify: got %q (%v), want %q", buf[:n], err, want)
	}
}
