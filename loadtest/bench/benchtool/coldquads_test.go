package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/netns/netnstest"
	"golang.org/x/sys/unix"
)

// TestRunColdQuads runs coldquads against two "gateways": one on the
// host's loopback, one on the loopback of a network namespace of the
// test's (nothing listens on its port in the host's namespace, so its
// answers show that the dial was made in there). Both answer as a
// gateway does (X-Envgate-Env); the hosts they saw must follow the
// palindromic schedule, and each mode gets one figure per quad.
func TestRunColdQuads(t *testing.T) {
	netnstest.RequireRoot(t)
	name := netnstest.IPNetnsAdd(t, fmt.Sprintf("bq%d", os.Getpid()))
	nsPath := "/run/netns/" + name
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	var mu sync.Mutex
	var seen []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host)
		mu.Unlock()
		env, _, _ := strings.Cut(r.Host, ".")
		w.Header().Set("X-Envgate-Env", env)
	})
	host, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inside := listenIn(t, nsPath)
	for _, ln := range []net.Listener{host, inside} {
		srv := &http.Server{Handler: h}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	if c, err := net.Dial("tcp4", inside.Addr().String()); err == nil {
		c.Close()
		t.Skipf("%s answers in the host's namespace too: the test cannot tell where coldquads dials", inside.Addr())
	}
	stopped := map[string][]string{}
	adminSock := func(mode string) string {
		sock := t.TempDir() + "/admin.sock"
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/envs/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(admin.ActionHeader) == "" {
				http.Error(w, "no "+admin.ActionHeader, http.StatusForbidden)
				return
			}
			mu.Lock()
			stopped[mode] = append(stopped[mode], r.PathValue("name"))
			mu.Unlock()
		})
		srv := &http.Server{Handler: mux}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return sock
	}
	// Batches of 2 quads: the envs of quads 0 and 1 are stopped, those of
	// the last quad are not (the run ends there).
	res, err := runColdQuads([]string{"-quads", "3", "-per", "2", "-batch", "2", "-quiet", "1.1", "-hosts", "c{{.Mode}}{{.Quad}}y{{.Slot}}x{{.I}}.localhost",
		"a=/proc/self/ns/net," + host.Addr().String() + "," + adminSock("a"), "b=" + nsPath + "," + inside.Addr().String() + "," + adminSock("b")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TTFB["a"]) != 3 || len(res.TTFB["b"]) != 3 {
		t.Fatalf("ttfb = %v, want 3 figures per mode", res.TTFB)
	}
	var want []string
	for q, order := range [][]string{{"a", "b", "b", "a"}, {"b", "a", "a", "b"}, {"a", "b", "b", "a"}} {
		for k, m := range order {
			for i := range 2 {
				want = append(want, fmt.Sprintf("c%s%dy%dx%d.localhost", m, q, k, i))
			}
		}
	}
	if !slices.Equal(seen, want) {
		t.Errorf("hosts in order\n%v\nwant\n%v", seen, want)
	}
	for _, mode := range []string{"a", "b"} {
		var envs []string
		for _, h := range want[:16] { // quads 0 and 1
			if env, _, _ := strings.Cut(h, "."); env[1:2] == mode {
				envs = append(envs, env)
			}
		}
		got := stopped[mode]
		slices.Sort(got)
		slices.Sort(envs)
		if !slices.Equal(got, envs) {
			t.Errorf("mode %s: stopped %v, want %v", mode, got, envs)
		}
	}
	if _, err := runColdQuads([]string{"-quads", "1", "-batch", "1", "a=/proc/self/ns/net," + host.Addr().String(), "b=" + nsPath + "," + inside.Addr().String()}); err == nil {
		t.Error("-batch without admin sockets: no error")
	}
	_, err = runColdQuads([]string{"-quads", "1", "a=/proc/self/ns/net," + host.Addr().String(), "b=/proc/self/ns/net," + inside.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "mode b") {
		t.Errorf("a target that does not answer: err = %v, want one naming mode b", err)
	}
}

// listenIn listens on 127.0.0.1 in the network namespace at path, from
// a thread switched into it and back (a thread left there could be the
// main thread, which the runtime never ends: /proc/self/ns/net would
// then name the test's namespace).
func listenIn(t *testing.T, path string) net.Listener {
	t.Helper()
	ns, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer self.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ln, lerr := net.Listen("tcp4", "127.0.0.1:0")
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		panic(err) // the thread is in the wrong namespace: stop here
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		t.Fatal(lerr)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
