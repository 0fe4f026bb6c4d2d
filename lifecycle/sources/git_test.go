package sources

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func commitFile(t *testing.T, repo, name, content string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(repo, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	gitT(t, repo, "add", name)
	gitT(t, repo, "commit", "--quiet", "-m", "c")
	return gitT(t, repo, "rev-parse", "HEAD")
}

// newTestMirror makes a repository <tmp>/repo with one commit on main, a
// file name holding content, and returns a Mirror of it under
// <tmp>/state (not cloned yet) and the commit. It skips t without git.
func newTestMirror(t *testing.T, name, content string) (*Mirror, string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	root := t.TempDir()
	repo := filepath.Join(root, "repo")
	gitT(t, root, "init", "--quiet", "--initial-branch=main", repo)
	c1 := commitFile(t, repo, name, content)
	return &Mirror{Repo: repo, Dir: filepath.Join(root, "state", "mirror.git"), Worktrees: filepath.Join(root, "state", "checkouts")}, c1
}

// TestMirrorWorktree: the mirror clones and fetches; a worktree is made
// at a commit owned by the env's uid, moved by a forced detached
// checkout (untracked files kept, edits discarded), never reads a .git
// the env's user planted, and is removed. GIT_* variables of the gateway
// do not reach git.
func TestMirrorWorktree(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: chowns worktrees to another uid (CI runs as root)")
	}
	t.Setenv("GIT_DIR", "/nonexistent") // must not reach envgate's git
	ctx := context.Background()
	m, c1 := newTestMirror(t, "VERSION", "v1\n")
	repo, root := m.Repo, filepath.Dir(m.Repo)
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(m.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("mirror mode %v (%v), want 0700: it may hold credentials and every branch", fi.Mode(), err)
	}
	heads, err := m.Heads(ctx)
	if err != nil || heads["main"] != c1 {
		t.Fatalf("heads %v %v, want main at %s", heads, err, c1)
	}
	const uid = 61234
	dir, err := m.Worktree(ctx, "main", c1, uid, uid)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "VERSION"), &st); err != nil || st.Uid != uid {
		t.Fatalf("VERSION owned by %d (%v), want %d", st.Uid, err, uid)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("worktree mode %v (%v), want 0700", fi.Mode(), err)
	}

	// The env's user edits a tracked file, adds an untracked one, and
	// plants a .git directory whose config would run a command as root.
	os.WriteFile(filepath.Join(dir, "VERSION"), []byte("edited\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "node_modules.txt"), []byte("kept\n"), 0o644)
	pwned := filepath.Join(root, "pwned")
	if err := os.Remove(filepath.Join(dir, ".git")); err != nil {
		t.Fatal(err)
	}
	gitT(t, dir, "init", "--quiet")
	gitT(t, dir, "-c", "safe.directory=*", "config", "core.fsmonitor", "touch "+pwned)
	// The trap works: git run plainly in the worktree springs it.
	gitT(t, dir, "-c", "safe.directory=*", "status", "--short")
	if _, err := os.Stat(pwned); err != nil {
		t.Fatalf("the planted .git did not run its fsmonitor command (%v): the test proves nothing", err)
	}
	os.Remove(pwned)

	c2 := commitFile(t, repo, "VERSION", "v2\n")
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Worktree(ctx, "main", c2, uid, uid); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "VERSION")); string(b) != "v2\n" {
		t.Errorf("VERSION after the move: %q, want v2", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "node_modules.txt")); string(b) != "kept\n" {
		t.Errorf("untracked file after the move: %q, want kept", b)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("git ran a command from a .git the env's user planted")
	}

	if err := m.RemoveWorktree(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("worktree still there: %v", err)
	}
	if list := gitT(t, root, "--git-dir", m.Dir, "worktree", "list"); strings.Contains(list, dir) {
		t.Errorf("git still lists the worktree:\n%s", list)
	}
	// Made again from scratch after removal.
	if _, err := m.Worktree(ctx, "main", c2, uid, uid); err != nil {
		t.Fatalf("worktree after removal: %v", err)
	}
}

// TestRemoteHeads: envgate url reads a repository's branches without a
// mirror.
func TestRemoteHeads(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	root := t.TempDir()
	repo := filepath.Join(root, "repo")
	gitT(t, root, "init", "--quiet", "--initial-branch=main", repo)
	c1 := commitFile(t, repo, "f", "1")
	gitT(t, repo, "branch", "feature/Login_Page")
	heads, err := RemoteHeads(context.Background(), repo, "")
	if err != nil || len(heads) != 2 || heads["main"] != c1 || heads["feature/Login_Page"] != c1 {
		t.Fatalf("heads %v %v", heads, err)
	}
}
