package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestGracefulStopLeavesNothing(t *testing.T) {
	instance, cfg, addr := testInstance(t, 6, "")
	g := startServe(t, cfg, addr)
	for _, env := range []string{"feature-x", "feature-y"} {
		code, body, hdr := g.get(t, env+".localhost", "/")
		if code != 200 || !strings.Contains(body, env) || hdr.Get("Envgate-Cold-Start") == "" {
			t.Fatalf("%s: %d %q", env, code, body)
		}
	}
	if ns, links := instanceState(t, instance); len(ns) != 2 || len(links) != 2 {
		t.Fatalf("while serving: namespaces %v links %v, want 2 of each", ns, links)
	}
	// The default template's "{{.Self}} demo-server" runs envgate-demo,
	// which sits beside the binary. (The env's init, the trampoline, has
	// the same command line.)
	demoBin := filepath.Join(filepath.Dir(envgateBinary(t)), demoName)
	out, err := exec.Command("pgrep", "-f", "^"+demoBin+" demo-server --listen :3000 --name feature-x").Output()
	var exes []string
	for _, pid := range strings.Fields(string(out)) {
		exe, _ := os.Readlink("/proc/" + pid + "/exe")
		exes = append(exes, exe)
	}
	if !slices.Contains(exes, demoBin) {
		t.Fatalf("pgrep %s demo-server ... feature-x: %v %q; programs %q, want %s among them", demoBin, err, out, exes, demoBin)
	}
	g.stop(t, syscall.SIGTERM)
	if ns, links := instanceState(t, instance); len(ns)+len(links) != 0 {
		t.Fatalf("after graceful stop: namespaces %v links %v remain", ns, links)
	}
	if out, _ := exec.Command("pgrep", "-f", "demo-server --listen :3000 --name feature-").Output(); len(out) > 0 {
		t.Fatalf("dev servers survived: %s", out)
	}
}

func TestGCAfterKill(t *testing.T) {
	instance, cfg, addr := testInstance(t, 6, "")
	g := startServe(t, cfg, addr)
	if code, _, _ := g.get(t, "crashme.localhost", "/healthz"); code != 200 {
		t.Fatalf("status %d", code)
	}
	g.stop(t, syscall.SIGKILL)
	ns, links := instanceState(t, instance)
	if len(ns) != 1 || len(links) != 1 {
		t.Fatalf("after SIGKILL: namespaces %v links %v, want the env's leftovers", ns, links)
	}
	out, err := exec.Command(envgateBinary(t), "gc", "--config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("envgate gc: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "removed namespace "+instance+"-crashme") {
		t.Fatalf("gc output: %s", out)
	}
	if ns, links := instanceState(t, instance); len(ns)+len(links) != 0 {
		t.Fatalf("after gc: namespaces %v links %v remain", ns, links)
	}
	out, err = exec.Command(envgateBinary(t), "gc", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing left behind") {
		t.Fatalf("second gc: %v %s", err, out)
	}
}

func TestGCRefusesWhileServing(t *testing.T) {
	_, cfg, addr := testInstance(t, 6, "")
	startServe(t, cfg, addr)
	out, err := exec.Command(envgateBinary(t), "gc", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is running") {
		t.Fatalf("gc while serving: err %v, output %s; want a refusal", err, out)
	}
}

func TestServeRejectsBrokenConfig(t *testing.T) {
	_, cfg, _ := testInstance(t, 6, "templates:\n  - name: web\n    command: [x]\n    port: 0\n")
	out, err := exec.Command(envgateBinary(t), "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "envgate.yaml:11: templates[0].port") {
		t.Fatalf("serve with a broken config: %v\n%s", err, out)
	}
}
