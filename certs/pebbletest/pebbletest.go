// Package pebbletest runs Pebble, Let's Encrypt's test ACME server, and
// pebble-challtestsrv as its DNS server, on loopback, for integration tests
// of real ACME flows. Validation is real (PEBBLE_VA_ALWAYS_VALID is unset):
// Pebble fetches HTTP-01 and TLS-ALPN-01 challenges from 127.0.0.1 on the
// ports the test names, so the code under test must serve them there.
// For DNS-01, StartDNS serves a zone that takes RFC 2136 updates, and
// Options.DNS makes it Pebble's resolver.
//
// The binaries are built from the module version pinned in go.mod (tool
// dependencies) once per machine and version, into a cache directory under
// the system temp dir, so parallel test processes share one build.
// Everything else (processes, config, logs) is tied to the test and ends
// with it.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const module = "github.com/letsencrypt/pebble/v2"

// Options says where Pebble validates challenges.
type Options struct {
	// HTTPPort and TLSPort are the ports on 127.0.0.1 Pebble fetches
	// HTTP-01 and TLS-ALPN-01 challenges from. Required.
	HTTPPort, TLSPort int
	// DNS, host:port, is Pebble's only resolver. Empty: a
	// pebble-challtestsrv that answers every name with 127.0.0.1.
	DNS string
}

// Pebble is one running Pebble.
type Pebble struct {
	// DirURL is the ACME directory URL.
	DirURL string
	// APIRootPEM is the path of the root of Pebble's own HTTPS
	// certificate, what an ACME client must trust to talk to it
	// (certs.Config.CARoot, tls.ca_root).
	APIRootPEM string
	// Roots holds the root of the certificates Pebble issues (fetched from
	// /roots/0 on its management port); a fresh one each run.
	Roots *x509.CertPool
	// RootPEM is Roots' certificate, PEM-encoded.
	RootPEM []byte
	// Log is Pebble's output.
	Log *Buffer
}

// Orders counts the orders Pebble has accepted, from its log.
func (p *Pebble) Orders() int { return p.Log.Count("Added order") }

// Start runs Pebble (and, unless o.DNS is set, pebble-challtestsrv) until
// the test ends. Their output is logged if the test fails.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	bin := binaries(t)
	dnsAddr := o.DNS
	if dnsAddr == "" {
		dnsAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		challMgmt := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		challOut := &Buffer{}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("challtestsrv output:\n%s", challOut.String())
			}
		})
		exited := startProcess(t, challOut, os.Environ(), filepath.Join(bin, "pebble-challtestsrv"),
			"-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "",
			"-dnsserver", dnsAddr, "-management", challMgmt,
			"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
		WaitListening(t, challMgmt, exited)
		WaitListening(t, dnsAddr, exited)
	}

	mod := moduleDir(t)
	listen := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	mgmt := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(mod, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(mod, "test/certs/localhost/key.pem"),
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "default", "validityPeriod": 7776000,
		}},
	}}
	confJSON, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(confPath, confJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	// No random sleeps before validation, and no nonce rejections: both
	// exist to exercise clients' retries and would only make tests slow.
	env = append(env, "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	p := &Pebble{
		DirURL:     "https://" + listen + "/dir",
		APIRootPEM: filepath.Join(mod, "test/certs/pebble.minica.pem"),
		Log:        &Buffer{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.Log.String())
		}
	})
	exited := startProcess(t, p.Log, env, filepath.Join(bin, "pebble"), "-config", confPath, "-dnsserver", dnsAddr)
	WaitListening(t, listen, exited)
	WaitListening(t, mgmt, exited)
	p.RootPEM = fetchRoot(t, p.APIRootPEM, mgmt)
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM(p.RootPEM) {
		t.Fatalf("pebble /roots/0: no PEM certificate in %q", p.RootPEM)
	}
	return p
}

// Bounds on the go command, so that one that hangs (a module proxy that
// never answers) fails the test instead of lasting until the global test
// timeout. Downloading takes about a second; building pebble from an empty
// build cache took 2.5 minutes on a loaded 2-core machine.
const (
	downloadTimeout = 3 * time.Minute
	buildTimeout    = 10 * time.Minute
)

var (
	buildMu  sync.Mutex // guards the fields below
	modDir   string     // pebble's source directory, once downloaded
	modVer   string
	modError error  // a failed download, reported to every later test
	binDir   string // set once built
	binError error  // a failed build, reported to every later test
)

// moduleDir returns the pebble module's source directory (for its test
// certificates), downloading the version go.mod pins if the module cache
// does not hold it yet. (`go list -m` would print an empty Dir then.)
func moduleDir(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if modDir == "" && modError == nil {
		modDir, modVer, modError = download()
	}
	if modError != nil {
		t.Fatal(modError)
	}
	return modDir
}

// download runs `go mod download -json` for pebble at the version in the
// main module's build list, and returns where the module cache holds it.
func download() (dir, version string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), downloadTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, runErr := cmd.Output()
	// On failure the go command still prints the JSON, with Error set.
	var m struct{ Path, Version, Dir, Error string }
	jsonErr := json.Unmarshal(out, &m)
	switch {
	case ctx.Err() != nil:
		return "", "", fmt.Errorf("pebbletest: go mod download %s: no answer within %v (is the module proxy reachable?)\n%s", module, downloadTimeout, stderr.Bytes())
	case m.Error != "":
		return "", "", fmt.Errorf("pebbletest: go mod download %s: %s", module, m.Error)
	case runErr != nil:
		return "", "", fmt.Errorf("pebbletest: go mod download %s: %w\n%s%s", module, runErr, out, stderr.Bytes())
	case jsonErr != nil:
		return "", "", fmt.Errorf("pebbletest: go mod download %s: %w in %q", module, jsonErr, out)
	case m.Dir == "" || m.Version == "":
		return "", "", fmt.Errorf("pebbletest: go mod download %s: no Dir or Version in %q", module, out)
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "test", "certs", "pebble.minica.pem")); err != nil {
		return "", "", fmt.Errorf("pebbletest: %s %s has no test certificates: %w", module, m.Version, err)
	}
	return m.Dir, m.Version, nil
}

// binaries returns the directory holding pebble and pebble-challtestsrv,
// building them if this machine has not yet for this version.
func binaries(t testing.TB) string {
	t.Helper()
	moduleDir(t)
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir == "" && binError == nil {
		binDir, binError = build()
	}
	if binError != nil {
		t.Fatal(binError)
	}
	return binDir
}

var binaryNames = []string{"pebble", "pebble-challtestsrv"}

// build builds pebble and pebble-challtestsrv into a directory under the
// system temp dir named for modVer, unless they are there already. Called
// with buildMu held, after a successful download.
func build() (string, error) {
	dir := filepath.Join(os.TempDir(), "envgate-pebbletest", modVer+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	if haveBinaries(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("pebbletest: %w", err)
	}
	// Test processes of several packages start at once on a fresh machine;
	// one builds while the others wait for it, rather than each compiling
	// the same packages on the same few cores.
	unlock, err := lockDir(dir, buildTimeout)
	if err != nil {
		return "", err
	}
	defer unlock()
	if haveBinaries(dir) {
		return dir, nil
	}
	// Build beside the target and rename into place, so a process that
	// does not take the lock never executes a half-written binary.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("pebbletest: %w", err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// The packages are tool dependencies in go.mod, so this builds the
	// pinned version and fetches whatever of theirs the module cache lacks.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp+"/", module+"/cmd/pebble", module+"/cmd/pebble-challtestsrv")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("not done within %v", buildTimeout)
		}
		return "", fmt.Errorf("pebbletest: building pebble %s: %w\n%s", modVer, err, out)
	}
	for _, n := range binaryNames {
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(dir, n)); err != nil {
			return "", fmt.Errorf("pebbletest: %w", err)
		}
	}
	return dir, nil
}

func haveBinaries(dir string) bool {
	for _, n := range binaryNames {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return false
		}
	}
	return true
}

// lockDir takes an exclusive flock on dir/.lock, trying for up to wait; the
// kernel drops it if the process dies.
func lockDir(dir string, wait time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pebbletest: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("pebbletest: lock %s (another test process building pebble?): %w", f.Name(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startProcess(t testing.TB, out io.Writer, env []string, path string, args ...string) <-chan struct{} {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select { // WaitDelay bounds Wait; this bounds a process that ignores SIGKILL (stuck in the kernel)
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("%s (pid %d) still running 30s after SIGKILL", path, cmd.Process.Pid)
		}
	})
	return exited
}

func fetchRoot(t testing.TB, apiRootPEM, mgmt string) []byte {
	t.Helper()
	pem, err := os.ReadFile(apiRootPEM)
	if err != nil {
		t.Fatal(err)
	}
	api := x509.NewCertPool()
	api.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: api}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	resp, err := client.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble /roots/0: %d %v", resp.StatusCode, err)
	}
	return body
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitListening waits up to a minute for addr to accept connections, and
// fails the test early if exited closes first.
func WaitListening(t testing.TB, addr string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("process for %s exited before listening", addr)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after 60s", addr)
}

// Buffer collects a process's or logger's output; safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count counts the occurrences of s.
func (b *Buffer) Count(s string) int { return strings.Count(b.String(), s) }
