package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/envgate/envgate/netns/netnstest"
)

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtPath != "" {
		os.RemoveAll(filepath.Dir(builtPath))
	}
	os.Exit(code)
}

// envgateBinary builds bin/envgate once per test run (without -race: it
// is the system under test, run as a separate process).
func envgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "envgate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtPath = filepath.Join(dir, "envgate")
		// With the trampoline and the demo server beside it, as make
		// build and the image install them.
		out, err := exec.Command("go", "build", "-o", dir+"/", ".", "../envgate-init", "../envgate-demo").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtPath
}

// gatewayProc is `envgate serve` running as a child process.
type gatewayProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	log  *pebbletest.Buffer
}

// testInstance returns a fresh instance name (checked for leaks when the
// test ends) and a config file for it serving on a free loopback port.
// extra is appended to the YAML.
func testInstance(t *testing.T, poolBlock int, extra string) (instance, cfgPath, addr string) {
	t.Helper()
	instance = netnstest.Prefix(t)
	port := netnstest.LoopbackPort(t)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`instance: %s
domains: [localhost]
listen: {http: "%s"}
state_dir: %s
tls: {mode: "off"}
network: {pool: %s}
shutdown_timeout: 5s
%s`, instance, addr, filepath.Join(dir, "state"), netnstest.Pool(poolBlock), extra)
	cfgPath = filepath.Join(dir, "envgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return instance, cfgPath, addr
}

// demoTemplate is a templates: section with the built-in demo server
// (no data dir), for a config's end.
const demoTemplate = `templates:
  - name: demo
    match: "*"
    command: ["{{.Self}}", "demo-server", "--listen", ":{{.Port}}", "--name", "{{.Name}}"]
    port: 3000
    ready: {http: /healthz, timeout: 30s}
    allow_root: true
`

// startServe runs `envgate serve --config cfg` (and flags) and waits
// until it answers.
func startServe(t *testing.T, cfg, addr string, flags ...string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{addr: addr, done: make(chan struct{}), log: &pebbletest.Buffer{}}
	g.cmd = exec.Command(envgateBinary(t), append([]string{"serve", "--config", cfg, "--log-format", "json"}, flags...)...)
	g.cmd.Stdout = g.log
	g.cmd.Stderr = g.log
	g.cmd.WaitDelay = 5 * time.Second // a dev server left holding the output pipe
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
			t.Errorf("gateway (pid %d) not reaped 30s after SIGKILL", g.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.log.String())
		}
	})
	pebbletest.WaitListening(t, addr, g.done) // the cleanup above shows the log
	return g
}

// stop sends sig and waits for the process to exit.
func (g *gatewayProc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	g.cmd.Process.Signal(sig)
	select {
	case <-g.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("gateway did not exit on %v", sig)
	}
}

// get requests http://host/path through the gateway process.
func (g *gatewayProc) get(t *testing.T, host, path string) (int, string, http.Header) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, g.addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	resp, err := c.Get("http://" + host + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// instanceState lists namespaces, host links and processes in namespaces
// of instance.
func instanceState(t *testing.T, instance string) (namespaces, links []string) {
	t.Helper()
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), instance+"-") {
			namespaces = append(namespaces, e.Name())
		}
	}
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, instance+"-") {
				links = append(links, name)
			}
		}
	}
	return namespaces, links
}
