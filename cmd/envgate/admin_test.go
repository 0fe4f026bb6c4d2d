package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/netns/netnstest"
)

// talkTemplate runs the demo server beside a loop that prints the content
// of <data dir>/say when the file appears: a test can make the dev server
// say a line when it likes.
const talkTemplate = `templates:
  - name: talk
    match: "*"
    command: ["/bin/sh", "-c", "{{.Self}} demo-server --listen :{{.Port}} --name {{.Name}} --data-dir {{.DataDir}} & while sleep 0.1; do if [ -f {{.DataDir}}/say ]; then cat {{.DataDir}}/say; rm -f {{.DataDir}}/say; fi; done"]
    port: 3000
    ready: {http: /healthz, timeout: 30s}
    idle_timeout: 15m
    allow_root: true
`

// cli runs envgate with args against cfg and returns its output.
func cli(t *testing.T, cfg string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(envgateBinary(t), append([]string{"--config", cfg}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustCLI(t *testing.T, cfg string, args ...string) string {
	t.Helper()
	out, err := cli(t, cfg, args...)
	if err != nil {
		t.Fatalf("envgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func lsJSON(t *testing.T, cfg string) map[string]admin.Env {
	t.Helper()
	var envs []admin.Env
	out := mustCLI(t, cfg, "ls", "-o", "json")
	if err := json.Unmarshal([]byte(out), &envs); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	m := map[string]admin.Env{}
	for _, e := range envs {
		m[e.Name] = e
	}
	return m
}

func processGone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// publicDir is a directory every user can enter, for what a test's
// unprivileged client must reach (t.TempDir is 0700).
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "envgate-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAdminCLI drives a running gateway through the CLI on its admin
// socket: ls, status, logs -f, restart, stop, destroy; the logs outlive a
// gateway restart; the socket refuses a user outside admin.group; the TCP
// listener refuses requests without the token.
func TestAdminCLI(t *testing.T) {
	netnstest.RequireRoot(t)
	pub := publicDir(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAddr := "127.0.0.1:" + strconv.Itoa(netnstest.LoopbackPort(t))
	const adminGID = 4242
	extra := talkTemplate + "admin: {socket: " + filepath.Join(pub, "admin.sock") + ", group: \"" + strconv.Itoa(adminGID) +
		"\", listen: \"" + adminAddr + "\", token_file: " + tokenFile + "}\n"
	instance, cfg, addr := testInstance(t, 6, extra)
	defer netnstest.CheckClean(t, instance)
	g := startServe(t, cfg, addr)
	stateDir := filepath.Join(filepath.Dir(cfg), "state")

	if out, _ := cli(t, cfg, "ls"); !strings.Contains(out, "NAME") {
		t.Fatalf("ls with no envs: %s", out)
	}
	if code, _, _ := g.get(t, "alpha.localhost", "/"); code != 200 {
		t.Fatalf("alpha: %d", code)
	}
	envs := lsJSON(t, cfg)
	alpha := envs["alpha"]
	if alpha.State != "ready" || alpha.Pid <= 0 || alpha.Requests < 1 || alpha.LastStartSeconds <= 0 || alpha.Addr == "" {
		t.Fatalf("ls -o json: alpha %+v", alpha)
	}
	if out := mustCLI(t, cfg, "ls"); !strings.Contains(out, "alpha") || !strings.Contains(out, "ready") {
		t.Errorf("ls table:\n%s", out)
	}
	if out := mustCLI(t, cfg, "status"); !strings.Contains(out, "1 ready") || !strings.Contains(out, "instance "+instance) {
		t.Errorf("status:\n%s", out)
	}

	// logs -f streams a line the dev server prints after the command began.
	follow := exec.Command(envgateBinary(t), "--config", cfg, "logs", "-f", "alpha")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	follow.Stderr = follow.Stdout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The first line is the demo server's own, from before the command.
	select {
	case l := <-lines:
		if !strings.Contains(l, "listening on") {
			t.Errorf("first logs line %q", l)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("logs -f printed nothing")
	}
	const marker = "hello from the dev server, said after logs -f began"
	if err := os.WriteFile(filepath.Join(stateDir, "envs", "alpha", "say"), []byte(marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for got := false; !got; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("logs -f ended")
			}
			got = strings.HasSuffix(l, " "+marker)
		case <-time.After(15 * time.Second):
			t.Fatal("logs -f did not show the new line")
		}
	}
	if out := mustCLI(t, cfg, "logs", "--since", "1h", "alpha"); !strings.Contains(out, marker) {
		t.Errorf("logs --since 1h:\n%s", out)
	}

	// restart: a new pid, the old process gone.
	if out := mustCLI(t, cfg, "restart", "alpha"); !strings.Contains(out, "alpha restarted: pid") {
		t.Errorf("restart: %s", out)
	}
	after := lsJSON(t, cfg)["alpha"]
	if after.Pid == alpha.Pid || after.Pid <= 0 || after.State != "ready" {
		t.Fatalf("after restart: pid %d (was %d), state %s", after.Pid, alpha.Pid, after.State)
	}
	if !processGone(alpha.Pid) {
		t.Errorf("old dev server %d still runs after restart", alpha.Pid)
	}

	// stop: no process, no namespace.
	if out := mustCLI(t, cfg, "stop", "alpha"); !strings.Contains(out, "alpha stopped") {
		t.Errorf("stop: %s", out)
	}
	if !processGone(after.Pid) {
		t.Errorf("dev server %d still runs after stop", after.Pid)
	}
	waitFor(t, "alpha's namespace to go", func() bool { ns, _ := instanceState(t, instance); return len(ns) == 0 })
	if e := lsJSON(t, cfg)["alpha"]; e.State != "stopped" || e.Pid != 0 {
		t.Errorf("after stop: %+v", e)
	}
	if out := mustCLI(t, cfg, "stop", "alpha"); !strings.Contains(out, "not running") {
		t.Errorf("second stop: %s", out)
	}

	// The socket: a user in admin.group may use it, another may not.
	asUser := func(gid uint32) (string, error) {
		bin := filepath.Join(pub, "envgate")
		if _, err := os.Stat(bin); err != nil {
			b, _ := os.ReadFile(envgateBinary(t))
			os.WriteFile(bin, b, 0o755)
			c, _ := os.ReadFile(cfg)
			os.WriteFile(filepath.Join(pub, "envgate.yaml"), c, 0o644)
		}
		cmd := exec.Command(bin, "--config", filepath.Join(pub, "envgate.yaml"), "ls")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asUser(65534); err == nil || !strings.Contains(out, "not allowed to use") {
		t.Errorf("a user outside admin.group: err %v, output:\n%s", err, out)
	}
	if out, err := asUser(adminGID); err != nil || !strings.Contains(out, "alpha") {
		t.Errorf("a user in admin.group: err %v, output:\n%s", err, out)
	}

	// TCP: the token or nothing.
	get := func(path, tok string) int {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/v1/envs", ""); c != 401 {
		t.Errorf("TCP without token: %d", c)
	}
	if c := get("/v1/envs", "not-the-token-at-all-no"); c != 401 {
		t.Errorf("TCP with a wrong token: %d", c)
	}
	if c := get("/v1/status", token); c != 200 {
		t.Errorf("TCP with the token: %d", c)
	}
	if c := get("/healthz", ""); c != 200 {
		t.Errorf("healthz: %d", c)
	}

	// The logs outlive the gateway.
	g.stop(t, syscall.SIGTERM)
	if _, err := cli(t, cfg, "ls"); err == nil {
		t.Error("ls with no gateway succeeded")
	} else if out, _ := cli(t, cfg, "ls"); !strings.Contains(out, "no gateway answers on") || !strings.Contains(out, "envgate serve") {
		t.Errorf("ls with no gateway: %s", out)
	}
	g = startServe(t, cfg, addr)
	defer g.stop(t, syscall.SIGTERM) // before CheckClean: a killed gateway leaves its firewall table
	if out := mustCLI(t, cfg, "logs", "alpha"); !strings.Contains(out, marker) {
		t.Errorf("logs after a gateway restart:\n%s", out)
	}

	// destroy: data dir and logs gone.
	dataDir := filepath.Join(stateDir, "envs", "alpha")
	if _, err := os.Stat(dataDir); err != nil {
		t.Fatalf("data dir before destroy: %v", err)
	}
	if out := mustCLI(t, cfg, "destroy", "alpha"); !strings.Contains(out, "alpha destroyed") {
		t.Errorf("destroy: %s", out)
	}
	for _, p := range []string{dataDir, filepath.Join(stateDir, "logs", "alpha.log")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after destroy: %v", p, err)
		}
	}
	if out, err := cli(t, cfg, "restart", "bad_name!"); err == nil || !strings.Contains(out, "not a valid env name") {
		t.Errorf("restart of a bad name: %v %s", err, out)
	}
	if out := mustCLI(t, cfg, "version"); !strings.HasPrefix(out, "envgate ") || !strings.Contains(out, "commit ") {
		t.Errorf("version: %s", out)
	}
}
