package sources_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle/sources"
	"github.com/rs/zerolog"
)

// fastRefresh makes background re-reads frequent; tests wait for their
// effect with Refreshes.Until, never for a fixed time.
const fastRefresh = 10 * time.Millisecond

func TestListSource(t *testing.T) {
	src, err := sources.NewList([]string{"main", "feature-x", "pr-12", "xn--bcher-kva"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	checkAllowed(t, src, map[string]bool{
		"main": true, "feature-x": true, "pr-12": true, "xn--bcher-kva": true,
		"pr-13": false, "Main": false, "": false,
	})
	for _, bad := range []string{"Main", "-x", "a_b", "", strings.Repeat("a", 64), "xn--a"} {
		if _, err := sources.NewList([]string{"ok", bad}); err == nil || !strings.Contains(err.Error(), "sources: list") {
			t.Errorf("NewList with %q: %v, want an error", bad, err)
		}
	}
	if err := sources.NewAny().Allow("anything"); err != nil {
		t.Errorf("any source refused: %v", err)
	}
}

func TestDirSource(t *testing.T) {
	root := t.TempDir()
	// xn--a is LDH but not a valid IDNA A-label: the gateway answers it
	// with 400, so the source must not allow it either.
	mkdirs(t, root, "main", "feature-x", ".git", "Upper", "has_underscore", "xn--a", "xn--bcher-kva")
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
	src, refreshes, err := sources.NewDirWatched(t.Context(), root, fastRefresh, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	checkAllowed(t, src, map[string]bool{
		"main": true, "feature-x": true, "linked": true, "xn--bcher-kva": true,
		"git": false, "upper": false, "notes": false, "file-link": false, "feature-y": false, "xn--a": false,
	})
	if err := src.Allow("feature-y"); err == nil || !strings.Contains(err.Error(), root) {
		t.Errorf("refusal %v: want it to name the directory", err)
	}

	// A new checkout appears, one goes away: picked up in the background.
	mkdirs(t, root, "feature-y")
	if err := os.Remove(filepath.Join(root, "feature-x")); err != nil {
		t.Fatal(err)
	}
	refreshes.Until(t, "feature-y allowed and feature-x refused", func() bool {
		return src.Allow("feature-y") == nil && src.Allow("feature-x") != nil
	})

	// The directory becomes unreadable: the last good set stays.
	moved := root + ".moved"
	if err := os.Rename(root, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(moved) })
	refreshes.Until(t, "a warning about the unreadable directory", func() bool {
		return strings.Contains(logs.String(), "env source unreadable")
	})
	checkAllowed(t, src, map[string]bool{"main": true, "feature-y": true, "feature-x": false})
	// Several more refreshes fail, counted as they finish: one warning per
	// lasting error, not one per refresh.
	failed := refreshes.Failed()
	refreshes.Until(t, "5 more failed reads", func() bool { return refreshes.Failed() >= failed+5 })
	checkAllowed(t, src, map[string]bool{"main": true, "feature-y": true, "feature-x": false})
	if n := strings.Count(logs.String(), "env source unreadable"); n != 1 {
		t.Errorf("%d warnings after %d failed reads of one lasting error, want 1:\n%s", n, refreshes.Failed(), logs.String())
	}

	// Readable again, with other contents.
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, root, "pr-7")
	refreshes.Until(t, "the new directory's names", func() bool {
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
	src, err := sources.NewDir(t.Context(), missing, 0, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NewDir of a missing dir: %v, want an error naming it", err)
	}
	if src != nil {
		t.Errorf("NewDir failed but returned a non-nil Source %#v", src)
	}
}

// TestDirSourceAllowDuringRefresh has Allow race the refresher, for -race.
func TestDirSourceAllowDuringRefresh(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "main")
	src, err := sources.NewDir(t.Context(), root, time.Millisecond, zerolog.Nop())
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

func TestBranchesSource(t *testing.T) {
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
			src, err := sources.NewBranches(t.Context(), repo, fastRefresh, zerolog.Nop())
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
	src, refreshes, err := sources.NewBranchesWatched(t.Context(), bare, fastRefresh, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	git(t, "", "--git-dir", bare, "branch", "pr/42", "refs/heads/main")
	git(t, "", "--git-dir", bare, "branch", "-D", "feature/Login_Page", "release/1.2")
	refreshes.Until(t, "pr-42 allowed and release-1-2 refused", func() bool {
		return src.Allow("pr-42") == nil && src.Allow("release-1-2") != nil
	})
	if err := src.Allow("feature-login-page"); err != nil {
		t.Errorf("feature-login-page refused while branch Feature-Login-Page exists: %v", err)
	}
}

func TestBranchesSourceFirstReadFails(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed (.ci/run installs it)")
	}
	notRepo := t.TempDir()
	_, err := sources.NewBranches(t.Context(), notRepo, 0, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), notRepo) || !strings.Contains(err.Error(), "git") {
		t.Fatalf("NewBranches of a plain directory: %v, want an error naming it", err)
	}
}

func checkAllowed(t *testing.T, src sources.Source, want map[string]bool) {
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
