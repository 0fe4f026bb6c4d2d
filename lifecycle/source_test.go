package lifecycle_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// fastRefresh makes background re-reads frequent; tests wait for their
// effect with waitFor, never for a fixed time.
const fastRefresh = 10 * time.Millisecond

func TestBranchLabel(t *testing.T) {
	long := strings.Repeat("a", 62) + "/b" // the cut lands right after a '-'
	for _, tc := range []struct{ branch, want string }{
		{"main", "main"},
		{"feature/Login_Page", "feature-login-page"},
		{"Feature-X", "feature-x"},
		{"fix--double", "fix-double"},
		{"--lead/trail--", "lead-trail"},
		{"release/1.2.3", "release-1-2-3"},
		{"users/ana/ñandú", "users-ana-and"},
		{"dependabot/npm_and_yarn/lodash-4.17.21", "dependabot-npm-and-yarn-lodash-4-17-21"},
		{long, strings.Repeat("a", 62)},
		{strings.Repeat("x", 70), strings.Repeat("x", 63)},
		{"___", ""},
		{"", ""},
	} {
		if got := lifecycle.BranchLabel(tc.branch); got != tc.want {
			t.Errorf("BranchLabel(%q) = %q, want %q", tc.branch, got, tc.want)
		}
	}
}

func FuzzBranchLabel(f *testing.F) {
	for _, s := range []string{"main", "feature/Login_Page", "--x--", strings.Repeat("ab-", 40), "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, branch string) {
		l := lifecycle.BranchLabel(branch)
		if l == "" {
			return
		}
		src, err := lifecycle.NewListSource([]string{l})
		if err != nil {
			t.Fatalf("BranchLabel(%q) = %q, not an env name: %v", branch, l, err)
		}
		if strings.Contains(l, "--") {
			t.Fatalf("BranchLabel(%q) = %q holds --", branch, l)
		}
		src.Close()
	})
}

func TestListSource(t *testing.T) {
	src, err := lifecycle.NewListSource([]string{"main", "feature-x", "pr-12"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	for name, want := range map[string]bool{"main": true, "feature-x": true, "pr-12": true, "pr-13": false, "Main": false, "": false} {
		if err := src.Allow(name); (err == nil) != want {
			t.Errorf("Allow(%q) = %v, want allowed %v", name, err, want)
		}
	}
	for _, bad := range []string{"Main", "-x", "a_b", "", strings.Repeat("a", 64)} {
		if _, err := lifecycle.NewListSource([]string{"ok", bad}); err == nil || !strings.Contains(err.Error(), "lifecycle: list source") {
			t.Errorf("NewListSource with %q: %v, want an error", bad, err)
		}
	}
	if err := lifecycle.NewAnySource().Allow("anything"); err != nil {
		t.Errorf("any source refused: %v", err)
	}
}

// TestListSourceRefusesThroughManager is the manager-level check: a name
// outside the source is refused by Acquire (ErrNotAllowed, before any
// sandbox is asked for) and by Allowed, while a listed one gets through.
func TestListSourceRefusesThroughManager(t *testing.T) {
	src, err := lifecycle.NewListSource([]string{"main", "feature-x"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	tmpl := &lifecycle.Template{Name: "all", Match: "*", Command: []string{"true"}, Port: 3000}
	if err := tmpl.Prepare(); err != nil {
		t.Fatal(err)
	}
	net := &refusingNetwork{}
	m, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{tmpl},
		DataRoot:  t.TempDir(),
		Network:   net,
		Allow:     src.Allow,
		Log:       zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := m.Acquire(ctx, "feature-y"); !errors.Is(err, lifecycle.ErrNotAllowed) {
		t.Fatalf("Acquire of an unlisted env: %v, want ErrNotAllowed", err)
	}
	if err := m.Allowed("feature-y"); !errors.Is(err, lifecycle.ErrNotAllowed) {
		t.Errorf("Allowed of an unlisted env: %v, want ErrNotAllowed", err)
	}
	if n := net.creates.Load(); n != 0 {
		t.Fatalf("%d sandboxes asked for an unlisted env", n)
	}
	if err := m.Allowed("main"); err != nil {
		t.Errorf("Allowed of a listed env: %v", err)
	}
	if _, err := m.Acquire(ctx, "main"); !errors.Is(err, errNoSandbox) {
		t.Errorf("Acquire of a listed env: %v, want it to reach the network", err)
	}
	if len(m.List()) != 1 {
		t.Errorf("refused env recorded: %+v", m.List())
	}
}

func TestDirSource(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "main", "feature-x", ".git", "Upper", "has_underscore")
	if err := os.WriteFile(filepath.Join(root, "notes"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "notes"), filepath.Join(root, "file-link")); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	src, err := lifecycle.NewDirSource(t.Context(), root, fastRefresh, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	checkAllowed(t, src, map[string]bool{
		"main": true, "feature-x": true, "linked": true,
		"git": false, "upper": false, "notes": false, "file-link": false, "feature-y": false,
	})
	if err := src.Allow("feature-y"); err == nil || !strings.Contains(err.Error(), root) {
		t.Errorf("refusal %v: want it to name the directory", err)
	}

	// A new checkout appears, one goes away: picked up in the background.
	mkdirs(t, root, "feature-y")
	if err := os.Remove(filepath.Join(root, "feature-x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "feature-y allowed and feature-x refused", func() bool {
		return src.Allow("feature-y") == nil && src.Allow("feature-x") != nil
	})

	// The directory becomes unreadable: the last good set stays.
	moved := root + ".moved"
	if err := os.Rename(root, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(moved) })
	waitFor(t, "a warning about the unreadable directory", func() bool {
		return strings.Contains(logs.String(), "env source unreadable")
	})
	checkAllowed(t, src, map[string]bool{"main": true, "feature-y": true, "feature-x": false})
	// Let several refreshes fail (the count below holds however many do):
	// one warning per lasting error, not one per refresh.
	time.Sleep(20 * fastRefresh)

	// Readable again, with other contents.
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, root, "pr-7")
	waitFor(t, "the new directory's names", func() bool {
		return src.Allow("pr-7") == nil && src.Allow("main") != nil
	})
	if !strings.Contains(logs.String(), "env source readable again") {
		t.Errorf("no recovery logged: %s", logs.String())
	}
	if n := strings.Count(logs.String(), "env source unreadable"); n != 1 {
		t.Errorf("%d warnings for one lasting error, want 1:\n%s", n, logs.String())
	}
}

func TestDirSourceFirstReadFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := lifecycle.NewDirSource(t.Context(), missing, 0, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NewDirSource of a missing dir: %v, want an error naming it", err)
	}
}

// TestDirSourceAllowDuringRefresh has Allow race the refresher, for -race.
func TestDirSourceAllowDuringRefresh(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "main")
	src, err := lifecycle.NewDirSource(t.Context(), root, time.Millisecond, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				if err := src.Allow("main"); err != nil {
					t.Error(err)
					return
				}
				_ = src.Allow("flapping")
			}
		})
	}
	for i := range 20 {
		d := filepath.Join(root, "flapping")
		if i%2 == 0 {
			mkdirs(t, root, "flapping")
		} else if err := os.Remove(d); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	src.Close()
	src.Close() // twice is harmless
	if err := src.Allow("main"); err != nil {
		t.Errorf("Allow after Close: %v", err)
	}
}

func TestGitSource(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed (.ci/run installs it)")
	}
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	git(t, work, "commit", "-q", "--allow-empty", "-m", "first")
	for _, b := range []string{"feature/Login_Page", "Feature-Login-Page", "release/1.2", "___"} {
		git(t, work, "branch", b)
	}
	// A tag named like a branch makes %(refname:short) say heads/main.
	git(t, work, "tag", "main")
	bare := filepath.Join(t.TempDir(), "repo.git")
	git(t, "", "clone", "-q", "--bare", work, bare)

	for _, repo := range []string{work, bare} {
		t.Run(filepath.Base(repo), func(t *testing.T) {
			src, err := lifecycle.NewGitSource(t.Context(), repo, fastRefresh, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(src.Close)
			checkAllowed(t, src, map[string]bool{
				"main": true, "feature-login-page": true, "release-1-2": true,
				"heads-main": false, "feature": false, "": false,
			})
		})
	}

	// Branches come and go in the background; a branch deleted while
	// another maps to the same name keeps the name allowed.
	src, err := lifecycle.NewGitSource(t.Context(), bare, fastRefresh, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	git(t, "", "--git-dir", bare, "branch", "pr/42", "refs/heads/main")
	git(t, "", "--git-dir", bare, "branch", "-D", "feature/Login_Page", "release/1.2")
	waitFor(t, "pr-42 allowed and release-1-2 refused", func() bool {
		return src.Allow("pr-42") == nil && src.Allow("release-1-2") != nil
	})
	if err := src.Allow("feature-login-page"); err != nil {
		t.Errorf("feature-login-page refused while branch Feature-Login-Page exists: %v", err)
	}
}

func TestGitSourceFirstReadFails(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed (.ci/run installs it)")
	}
	notRepo := t.TempDir()
	_, err := lifecycle.NewGitSource(t.Context(), notRepo, 0, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), notRepo) || !strings.Contains(err.Error(), "git") {
		t.Fatalf("NewGitSource of a plain directory: %v, want an error naming it", err)
	}
}

func checkAllowed(t *testing.T, src lifecycle.Source, want map[string]bool) {
	t.Helper()
	for name, ok := range want {
		if err := src.Allow(name); (err == nil) != ok {
			t.Errorf("Allow(%q) = %v, want allowed %v", name, err, ok)
		}
	}
}

func mkdirs(t *testing.T, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.Mkdir(filepath.Join(root, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// git runs git in dir with a fixed identity and no user or system config.
func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// waitFor polls cond until it holds; the deadline is only a backstop for
// a broken refresher, far above any refresh interval used here.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger on another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
