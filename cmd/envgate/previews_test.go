package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/envgate/envgate/lifecycle/envname"
)

// gitRepo is a repository made by a test, with commits made as root.
type gitRepo struct {
	t   *testing.T
	dir string
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (CI installs it)")
	}
	r := &gitRepo{t: t, dir: filepath.Join(t.TempDir(), "repo")}
	r.git("init", "--quiet", "--initial-branch=main", r.dir)
	return r
}

func (r *gitRepo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	if args[0] != "init" {
		cmd.Dir = r.dir
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit checks out branch (made from main if new), writes files (a ""
// content removes the file) and commits.
func (r *gitRepo) commit(branch string, files map[string]string) {
	r.t.Helper()
	if branch != "main" || r.hasCommits() {
		if strings.Contains(r.git("branch", "--list", branch), branch) || !r.hasCommits() {
			r.git("checkout", "--quiet", branch)
		} else {
			r.git("checkout", "--quiet", "-b", branch, "main")
		}
	}
	for name, content := range files {
		p := filepath.Join(r.dir, name)
		if content == "" {
			r.git("rm", "--quiet", name)
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
		r.git("add", name)
	}
	r.git("commit", "--quiet", "-m", "change "+branch)
}

func (r *gitRepo) hasCommits() bool {
	return exec.Command("git", "-C", r.dir, "rev-parse", "--verify", "--quiet", "HEAD").Run() == nil
}

// publicCopy copies the envgate binary into a directory every user can
// reach, so dev servers of dynamic users can run it.
func publicCopy(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "envgate-pub-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "envgate")
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// previewTemplate serves, through the demo server, the name that its
// prepare step built from the checkout's VERSION file; a FAIL file in the
// checkout makes the prepare step fail with its content as output.
const previewTemplate = `source: {kind: git, repo: %[1]s, checkouts: true, refresh: %[2]s}
templates:
  - name: preview
    dir: "{{.Checkout}}"
    prepare:
      - ["sh", "-c", "if [ -f FAIL ]; then cat FAIL; exit 3; fi; tr -d '\\n' < VERSION > built.txt"]
    command: ["sh", "-c", "exec \"$0\" demo-server --listen :{{.Port}} --name \"$(cat built.txt)\"", "%[3]s"]
    port: 3000
    ready: {http: /healthz, timeout: 30s}
`

// previewInstance writes the config of a gateway running previews of
// repo with tmpl (previewTemplate or one like it, whose %[1]s, %[2]s and
// %[3]s are the repository, the mirror's refresh and the envgate binary
// the dev servers run) and extra appended, and opens the directories
// above it to every user, so the envs' dynamic users reach their data
// dirs and checkouts. A refresh of 1h leaves fetches to webhooks. It
// returns the instance, the config file, the gateway's address and its
// state dir.
func previewInstance(t *testing.T, tmpl string, repo *gitRepo, refresh, extra string) (instance, cfg, addr, state string) {
	t.Helper()
	instance, cfg, addr = testInstance(t, 6, fmt.Sprintf(tmpl, repo.dir, refresh, publicCopy(t, envgateBinary(t)))+extra)
	for d := filepath.Dir(cfg); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return instance, cfg, addr, filepath.Join(filepath.Dir(cfg), "state")
}

// previewSecrets writes the webhook secret and the API token to files
// readable by root only, as previews read them, and returns their paths.
func previewSecrets(t *testing.T, secret, token string) (secretFile, tokenFile string) {
	t.Helper()
	dir := t.TempDir()
	secretFile, tokenFile = filepath.Join(dir, "secret"), filepath.Join(dir, "token")
	for p, v := range map[string]string{secretFile: secret, tokenFile: token} {
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return secretFile, tokenFile
}

// TestPreviewCheckouts (issue 14, tests 1-3 and a branch delete): each
// branch's env serves its own checkout, built by its prepare step and
// owned by the env's uid; a push restarts the env on the new commit with
// its data dir kept; a failing prepare shows its output and the next
// push recovers; a deleted branch's env loses worktree and data dir.
func TestPreviewCheckouts(t *testing.T) {
	repo := newGitRepo(t)
	long := "feature/" + strings.Repeat("abcdefghij", 9)[:82] // 90 characters
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	repo.commit(long, map[string]string{"VERSION": "long-v1\n"})
	repo.commit("broken", map[string]string{"VERSION": "broken-v1\n", "FAIL": "the build is broken: missing semicolon\n"})
	repo.commit("gone", map[string]string{"VERSION": "gone-v1\n"})
	longLabel := envname.LabelOf([]string{"main", "feature/Login_Page", long, "broken", "gone"}, long)
	if len(long) != 90 || !strings.HasPrefix(longLabel, "feature-abcdefghij") || len(longLabel) > 63 {
		t.Fatalf("long branch %q (%d) got label %q", long, len(long), longLabel)
	}

	_, cfg, addr, state := previewInstance(t, previewTemplate, repo, "200ms", "")
	_, port, _ := strings.Cut(addr, ":")
	// envgate url needs no gateway: before serve, no mirror exists yet.
	for branch, env := range map[string]string{"feature/Login_Page": "feature-login-page", long: longLabel} {
		out, err := exec.Command(envgateBinary(t), "url", "--config", cfg, branch).CombinedOutput()
		if want := "http://" + env + ".localhost:" + port + "/\n"; err != nil || string(out) != want {
			t.Errorf("envgate url %s: %v %q, want %q", branch, err, out, want)
		}
	}
	if out, err := exec.Command(envgateBinary(t), "url", "--config", cfg, "no/such/branch").CombinedOutput(); err == nil {
		t.Errorf("envgate url of a missing branch succeeded: %s", out)
	}
	g := startServe(t, cfg, addr)
	// Stopped gracefully before startServe's kill, so envs leave nothing.
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })

	for env, want := range map[string]string{"main": "main-v1", "feature-login-page": "login-v1", longLabel: "long-v1"} {
		code, body, _ := g.get(t, env+".localhost", "/")
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("%s: %d %q, want %q from its branch's checkout", env, code, body, want)
		}
		checkout, data := filepath.Join(state, "git", "checkouts", env), filepath.Join(state, "envs", env)
		var cst, dst syscall.Stat_t
		if err := syscall.Stat(filepath.Join(checkout, "VERSION"), &cst); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(data, &dst); err != nil {
			t.Fatal(err)
		}
		if cst.Uid == 0 || cst.Uid != dst.Uid {
			t.Errorf("%s: checkout owned by uid %d, data dir by %d: want the env's own (not root)", env, cst.Uid, dst.Uid)
		}
	}
	if code, _, _ := g.get(t, "not-a-branch.localhost", "/"); code != 404 {
		t.Errorf("not-a-branch: status %d, want 404 no_such_env", code)
	}
	for _, p := range []string{filepath.Join(state, "envs", "not-a-branch"), filepath.Join(state, "git", "checkouts", "not-a-branch")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists (%v) for a name that is no branch", p, err)
		}
	}

	// A push: the running env restarts on the new commit, data dir kept.
	keep := filepath.Join(state, "envs", "feature-login-page", "kept.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v2\n"})
	waitFor(t, "feature-login-page to serve login-v2", func() bool {
		code, body, _ := g.get(t, "feature-login-page.localhost", "/")
		return code == 200 && strings.Contains(body, "login-v2")
	})
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("data dir not kept across the update: %v", err)
	}

	// A failing prepare shows its output; a push that fixes it recovers.
	code, body, _ := g.get(t, "broken.localhost", "/")
	if code != 502 || !strings.Contains(body, "the build is broken: missing semicolon") || !strings.Contains(body, "prepare step") {
		t.Fatalf("broken: %d %q, want 502 with the prepare step's output", code, body)
	}
	if sha := repo.git("rev-parse", "broken")[:7]; !strings.Contains(body, "updating to "+sha) {
		t.Errorf("broken: the output does not say it was updating to %s: %q", sha, body)
	}
	repo.commit("broken", map[string]string{"FAIL": "", "VERSION": "fixed-v2\n"})
	waitFor(t, "broken to serve fixed-v2 after the fix", func() bool {
		code, body, _ := g.get(t, "broken.localhost", "/")
		return code == 200 && strings.Contains(body, "fixed-v2")
	})

	// A deleted branch: its env is destroyed, worktree and data dir gone.
	if code, body, _ := g.get(t, "gone.localhost", "/"); code != 200 || !strings.Contains(body, "gone-v1") {
		t.Fatalf("gone: %d %q", code, body)
	}
	repo.git("checkout", "--quiet", "main")
	repo.git("branch", "--quiet", "-D", "gone")
	waitFor(t, "gone's worktree and data dir to be removed", func() bool {
		_, e1 := os.Stat(filepath.Join(state, "git", "checkouts", "gone"))
		_, e2 := os.Stat(filepath.Join(state, "envs", "gone"))
		return os.IsNotExist(e1) && os.IsNotExist(e2)
	})
	if code, _, _ := g.get(t, "gone.localhost", "/"); code != 404 {
		t.Errorf("gone after delete: status %d, want 404", code)
	}
}
