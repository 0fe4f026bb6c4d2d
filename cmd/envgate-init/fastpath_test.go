//go:build linux

package main

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
)

// TestFastPathMatchesGo runs the same Specs through envgate-init built
// without cgo (the Go path, trampoline.Run) and with it (fastpath.c), as
// root, an init in a new pid and mount namespace as the gateway starts an
// isolated env's: the exit status and the output (the dev server's and
// the trampoline's messages) must be the same. Every init case's dev
// server also reports its init's thread count, so a C build that left a
// Spec to the Go path fails (the C init has one thread).
func TestFastPathMatchesGo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, credentials)")
	}
	ccName, _ := exec.Command("go", "env", "CC").Output()
	cc, err := exec.LookPath(strings.TrimSpace(string(ccName)))
	if err != nil {
		t.Skipf("no C compiler (%v): no C fast path to compare", err)
	}
	if b, _ := exec.Command(cc, "-print-file-name=libc.a").Output(); !strings.Contains(string(b), "/") {
		t.Skip("no static libc (libc6-dev): no C fast path to compare")
	}
	dir := t.TempDir()
	build := func(cgo string) string {
		out := filepath.Join(dir, "init-cgo"+cgo)
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build (CGO_ENABLED=%s): %v\n%s", cgo, err, b)
		}
		return out
	}
	goBin, cBin := build("0"), build("1")
	// Linked statically: a dynamic loader in a root init would honour
	// LD_PRELOAD and LD_LIBRARY_PATH of the env's environment.
	ef, err := elf.Open(cBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: want it linked statically", cBin)
		}
	}
	ef.Close()

	fences := filepath.Join(dir, "fences")
	if err := os.Mkdir(fences, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "bound", "conf")
	// Hidden: a mount point (gone), and a dir that is none, whose entries
	// are (as the netns run dir's): both kept paths, so only the hiding
	// keeps their mounts from the env.
	hidden, hiddenDir := filepath.Join(dir, "hidden"), filepath.Join(dir, "run")
	for _, m := range []string{hidden, filepath.Join(hiddenDir, "a"), filepath.Join(hiddenDir, "b")} {
		if err := os.MkdirAll(m, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", m, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(m, syscall.MNT_DETACH) })
	}
	type tcase struct {
		name   string
		spec   trampoline.Spec
		script string             // sh -c script of the dev server
		token  string             // written to the fence's token file first
		during func(t *testing.T) // while the init runs (after its first line of output)
		status int
		want   string // in the output
	}
	cred := &trampoline.Cred{UID: 65534, GID: 65534}
	fence := func() *trampoline.Fence { return &trampoline.Fence{Dir: fences, Env: "e", Token: 5} }
	cases := []tcase{
		{name: "exit-status", spec: trampoline.Spec{Init: true}, script: "exit 3", status: 3},
		{name: "killed", spec: trampoline.Spec{Init: true}, script: "kill -SEGV $$", status: 128 + 11, want: "dev server killed by signal segmentation fault"},
		{name: "terminated", spec: trampoline.Spec{Init: true}, script: "kill -TERM $$", status: 128 + 15},
		{name: "no-program", spec: trampoline.Spec{Init: true, Path: "/nonexistent/x"}, status: 127, want: "start /nonexistent/x: fork/exec /nonexistent/x: no such file or directory"},
		{name: "as-user", spec: trampoline.Spec{Init: true, NNP: true, Cred: cred, Unset: []string{"GOMAXPROCS"}},
			script: `grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapPrm|CapEff|CapAmb):' /proc/self/status; ls /proc/self/fd; env | grep -E '^(GOMAXPROCS|ENVGATE|KEEP)' | sort`,
			want:   "CapEff:\t0000000000000000"},
		{name: "mounts", spec: trampoline.Spec{Init: true, Cred: cred, TmpSize: 1 << 20, Keep: []string{fences},
			Binds: []trampoline.BindMount{{Target: target, Content: "nameserver 192.0.2.53\n"}}},
			script: `ls -A /tmp | grep -v '^envgate-init' | grep -c envgate-bind; cat ` + target + `; { echo x > ` + target + `; } 2>/dev/null || echo read-only; ls -d ` + fences + `; grep -E ' /(tmp|proc) ' /proc/mounts | cut -d' ' -f1-4; ls /proc | grep -c '^[0-9]'`,
			want:   "nameserver 192.0.2.53\nread-only"},
		{name: "fence-newer", spec: trampoline.Spec{Init: true, Fence: fence()}, script: "echo ran", token: "6\n", status: 126,
			want: "fence: a newer owner has claimed the env (token 6, this start's 5)"},
		{name: "fence-out-of-range", spec: trampoline.Spec{Init: true, Fence: fence()}, script: "echo ran", token: "99999999999999999999", status: 126,
			want: "fence: a newer owner has claimed the env (token 9223372036854775807, this start's 5)"},
		{name: "fence-watch", spec: trampoline.Spec{Init: true, Fence: fence()}, script: "echo up; exec sleep 60", token: "5",
			during: func(t *testing.T) {
				if err := os.WriteFile(filepath.Join(fences, "e.token"), []byte("7"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			status: 128 + 9, want: "envgate: env e has a newer owner (token 7, this run's 5): stopping it"},
		{name: "fence-waits", spec: trampoline.Spec{Init: true, Fence: fence()}, script: "echo got it", token: "5",
			during: nil, status: 0, want: "waiting for the previous owner's processes of env e to stop"},
		{name: "exec", spec: trampoline.Spec{NNP: true, Rlimits: []trampoline.Rlimit{{Resource: syscall.RLIMIT_NOFILE, Max: 77}}, Unset: []string{"GOMAXPROCS"}},
			script: `ulimit -n; grep NoNewPrivs /proc/self/status; env | grep -E '^(GOMAXPROCS|ENVGATE|KEEP)' | sort`, want: "77\nNoNewPrivs:\t1"},
		{name: "hide", spec: trampoline.Spec{Init: true, Hide: []string{hidden, hiddenDir}, Keep: []string{hidden, hiddenDir}},
			script: `grep -c 'size=64k' /proc/mounts; ls ` + hiddenDir, want: "0\na\nb\n", status: 0},
		{name: "reaps", spec: trampoline.Spec{Init: true},
			script: `( sh -c 'echo $$ > /tmp/orphan' & ); while [ ! -s /tmp/orphan ]; do sleep 0.01; done; p=$(cat /tmp/orphan); ` +
				`for i in $(seq 200); do [ -e /proc/$p ] || break; sleep 0.05; done; [ -e /proc/$p ] && echo "orphan not reaped" || echo reaped`,
			want: "reaped\n"},
		{name: "exec-missing", spec: trampoline.Spec{Path: "/nonexistent/y"}, status: 127, want: "exec /nonexistent/y: no such file or directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outs := map[string]string{}
			for _, v := range []struct {
				name, bin string
				fast      bool
			}{{"go", goBin, false}, {"c", cBin, true}} {
				os.Remove(filepath.Join(fences, "e.token"))
				if c.token != "" {
					if err := os.WriteFile(filepath.Join(fences, "e.token"), []byte(c.token), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				var unlock func()
				if c.name == "fence-waits" {
					unlock = holdLock(t, filepath.Join(fences, "e.lock"))
				}
				out, status := runInit(t, v.bin, c.spec, c.script, c.during, unlock)
				if status != c.status {
					t.Errorf("%s: exit status %d, want %d; output:\n%s", v.name, status, c.status, out)
				}
				if !strings.Contains(out, c.want) {
					t.Errorf("%s: output\n%s\nwant %q in it", v.name, out, c.want)
				}
				if c.spec.Init && c.status != 126 && c.status != 127 {
					m := threadsLine.FindStringSubmatch(out)
					if m == nil || (m[1] == "1") != v.fast {
						t.Errorf("%s: the init's threads %q: want 1 exactly for the C fast path; output:\n%s", v.name, m, out)
					}
					out = threadsLine.ReplaceAllString(out, "")
				}
				outs[v.name] = out
			}
			if outs["go"] != outs["c"] {
				t.Errorf("the Go path's output:\n%s\nthe C path's:\n%s", outs["go"], outs["c"])
			}
		})
	}
}

// threadsLine is what an init case's dev server says first: its init's
// thread count.
var threadsLine = regexp.MustCompile(`(?m)^threads=(\d*)\n`)

// holdLock takes path's flock as another env's init would hold it, and
// returns what lets it go.
func holdLock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }
}

// runInit runs bin as the trampoline with sp (Path defaulting to /bin/sh
// -c script), an init in new pid and mount namespaces when sp.Init, and
// returns its output and exit status. It holds the read end of its output
// pipe at 3, as the gateway gives every dev server (outputFD). during (if
// set) runs after the first line of output; release (if set) once the
// init says it waits.
func runInit(t *testing.T, bin string, sp trampoline.Spec, script string, during func(*testing.T), release func()) (string, int) {
	t.Helper()
	args := []string{"sh", "-c", script}
	if sp.Path == "" {
		sp.Path = "/bin/sh"
		if sp.Init {
			args[2] = `echo threads=$(sed -n 's/^Threads:\t//p' /proc/1/status); ` + script
		}
	}
	b, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := &exec.Cmd{Path: bin, Args: args, Stdout: w, Stderr: w,
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "KEEP=1", "GOMAXPROCS=1", trampoline.EnvVar + "=" + string(b)},
		ExtraFiles: []*os.File{r}, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if sp.Init {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	timer := time.AfterFunc(30*time.Second, func() {
		t.Errorf("%s still runs after 30 s: killed", bin)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	defer timer.Stop()
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if during != nil && strings.Contains(out.String(), "\n") {
			during(t)
			during = nil
		}
		if release != nil && strings.Contains(out.String(), "waiting for the previous owner") {
			release()
			release = nil
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	status := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = ee.ExitCode()
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), status
}
