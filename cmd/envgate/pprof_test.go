package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestPprofAddr(t *testing.T) {
	for _, tc := range []struct {
		in, network, addr string // network "": refused
	}{
		{"127.0.0.1:6060", "tcp", "127.0.0.1:6060"},
		{"127.1.2.3:0", "tcp", "127.1.2.3:0"},
		{"[::1]:6060", "tcp", "[::1]:6060"},
		{"[::ffff:127.0.0.1]:6060", "tcp", "127.0.0.1:6060"},
		{"localhost:6060", "tcp", "127.0.0.1:6060"},
		{"LocalHost:6060", "tcp", "127.0.0.1:6060"},
		{"/run/envgate/pprof.sock", "unix", "/run/envgate/pprof.sock"},
		{"unix:/run/envgate/../envgate/pprof.sock", "unix", "/run/envgate/pprof.sock"},
		{":6060", "", ""},             // every address
		{"0.0.0.0:6060", "", ""},      // every address
		{"[::]:6060", "", ""},         // every address
		{"10.0.0.5:6060", "", ""},     // a private network is still a network
		{"192.0.2.1:6060", "", ""},    // a public address
		{"example.com:6060", "", ""},  // a name that resolves anywhere
		{"[fe80::1%lo]:6060", "", ""}, // link-local
		{"127.0.0.1", "", ""},         // no port
		{"127.0.0.1:http", "", ""},    // a service name
		{"127.0.0.1:70000", "", ""},   // out of range
		{"unix:pprof.sock", "", ""},   // relative
		{"pprof.sock", "", ""},
	} {
		network, addr, err := pprofAddr(tc.in)
		switch {
		case tc.network == "" && err == nil:
			t.Errorf("%q accepted as %s %s; want a refusal", tc.in, network, addr)
		case tc.network == "" && !strings.Contains(err.Error(), pprofEnv):
			t.Errorf("%q: %v; want the error to name %s", tc.in, err, pprofEnv)
		case tc.network != "" && (err != nil || network != tc.network || addr != tc.addr):
			t.Errorf("%q: %s %s, %v; want %s %s", tc.in, network, addr, err, tc.network, tc.addr)
		}
	}
}

func TestPprofRefusesPublicAddress(t *testing.T) {
	t.Setenv(pprofEnv, ":0")
	stop, err := startPprof(zerolog.Nop())
	if err == nil {
		stop()
		t.Fatal("pprof served on every address")
	}
	if !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("error %q does not say what is allowed", err)
	}
}

func TestPprofOnUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pprof.sock")
	// A stale socket from an earlier run is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	t.Setenv(pprofEnv, sock)
	stop, err := startPprof(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v; want mode 0600", st, err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get("http://pprof/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("GET /debug/pprof/: %s\n%s", resp.Status, body)
	}

	// Something that is not a socket is never removed.
	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(pprofEnv, file)
	if stop, err := startPprof(zerolog.Nop()); err == nil {
		stop()
		t.Fatal("served on a path holding a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("the regular file was replaced")
	}
}
