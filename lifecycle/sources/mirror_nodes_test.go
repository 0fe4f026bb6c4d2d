package sources

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// mirrorNodeEnv carries the jobs of TestMirrorNodeHelper, the other node
// of TestMirrorNodesWait.
const mirrorNodeEnv = "ENVGATE_TEST_MIRROR_NODE"

// mirrorJob is what one node's goroutine does in a round: fetch (or
// clone) the shared mirror, check that it has the branch at the commit
// the round pushed, and move env's worktree there (removing it first if
// Remove), as a push handled by a node does.
type mirrorJob struct {
	Mirror  Mirror
	Env     string
	Branch  string
	Commit  string
	Content string // the file BRANCH at Commit
	Remove  bool
}

func (j mirrorJob) run(ctx context.Context) error {
	m := j.Mirror
	if j.Remove {
		if err := m.RemoveWorktree(ctx, j.Env); err != nil {
			return err
		}
	}
	if err := m.Sync(ctx); err != nil {
		return err
	}
	heads, err := m.Heads(ctx)
	if err != nil {
		return err
	}
	if heads[j.Branch] != j.Commit {
		return fmt.Errorf("after the fetch %s is at %q, want %s", j.Branch, heads[j.Branch], j.Commit)
	}
	if _, err := m.Worktree(ctx, j.Env, j.Commit, os.Getuid(), os.Getgid()); err != nil {
		return err
	}
	return j.check(ctx)
}

// check checks that env's worktree holds the job's commit.
func (j mirrorJob) check(ctx context.Context) error {
	dir := filepath.Join(j.Mirror.Worktrees, j.Env)
	if b, err := os.ReadFile(filepath.Join(dir, "BRANCH")); err != nil || string(b) != j.Content {
		return fmt.Errorf("env %s's worktree holds %q (%v), want %q", j.Env, b, err, j.Content)
	}
	head, err := j.Mirror.worktreeGit(ctx, j.Env, "rev-parse", "HEAD")
	if err != nil || strings.TrimSpace(string(head)) != j.Commit {
		return fmt.Errorf("env %s's worktree at %q (%v), want %s", j.Env, head, err, j.Commit)
	}
	return nil
}

// runJobs runs jobs at once, one goroutine each, and returns their
// errors.
func runJobs(ctx context.Context, jobs []mirrorJob) []error {
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			if err := j.run(ctx); err != nil {
				errs[i] = fmt.Errorf("env %s, branch %s: %w", j.Env, j.Branch, err)
			}
		})
	}
	wg.Wait()
	return errs
}

// TestMirrorNodeHelper is the other node of TestMirrorNodesWait: it says
// "ready", waits for its stdin to close (the round's start), then runs
// the jobs it was given, at once.
func TestMirrorNodeHelper(t *testing.T) {
	spec := os.Getenv(mirrorNodeEnv)
	if spec == "" {
		t.Skip("the other node of TestMirrorNodesWait, run by it")
	}
	var jobs []mirrorJob
	if err := json.Unmarshal([]byte(spec), &jobs); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, err := range runJobs(context.Background(), jobs) {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestMirrorNodesWait: two processes (two cluster nodes on one state
// dir) with four goroutines each fetch into one mirror and move their
// envs' worktrees to the branches just pushed, all at once, round after
// round (the first one clones; some rounds remove worktrees first). Each
// succeeds and ends at the right commit: changes of the mirror wait for
// each other instead of failing on git's own locks.
func TestMirrorNodesWait(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	root := t.TempDir()
	work := filepath.Join(root, "work")
	origin := filepath.Join(root, "origin.git")
	gitT(t, root, "init", "--quiet", "--bare", "--initial-branch=main", origin)
	gitT(t, root, "init", "--quiet", "--initial-branch=main", work)
	commitFile(t, work, "BRANCH", "main\n")
	const branches = 8
	for i := range branches {
		gitT(t, work, "branch", fmt.Sprintf("b%d", i))
	}
	gitT(t, work, "push", "--quiet", origin, "--all")
	m := Mirror{Repo: origin, Dir: filepath.Join(root, "state", "git", "mirror.git"),
		Worktrees: filepath.Join(root, "state", "git", "checkouts"), LockWait: time.Minute}

	for round := range 6 {
		// A push to every branch, then every node at once.
		var jobs []mirrorJob
		for i := range branches {
			b := fmt.Sprintf("b%d", i)
			gitT(t, work, "checkout", "--quiet", b)
			content := fmt.Sprintf("%s round %d\n", b, round)
			jobs = append(jobs, mirrorJob{Mirror: m, Env: "env-" + b, Branch: b,
				Commit: commitFile(t, work, "BRANCH", content), Content: content, Remove: round%3 == 2 && i%2 == 0})
		}
		gitT(t, work, "push", "--quiet", "--force", origin, "--all")

		spec, err := json.Marshal(jobs[branches/2:])
		if err != nil {
			t.Fatal(err)
		}
		other := exec.Command(os.Args[0], "-test.run=^TestMirrorNodeHelper$", "-test.count=1", "-test.v")
		other.Env = append(os.Environ(), mirrorNodeEnv+"="+string(spec))
		start, err := other.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := other.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		other.Stderr = &out
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		for lines.Scan() && lines.Text() != "ready" {
			out.WriteString(lines.Text() + "\n")
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for lines.Scan() {
				out.WriteString(lines.Text() + "\n")
			}
		}()
		start.Close() // go
		errs := runJobs(context.Background(), jobs[:branches/2])
		<-drained
		werr := other.Wait()
		for _, err := range errs {
			if err != nil {
				t.Errorf("round %d, this node: %v", round, err)
			}
		}
		if werr != nil {
			t.Errorf("round %d, the other node: %v\n%s", round, werr, out.String())
		}
		// Both nodes' envs, as they stand once all are done.
		for _, j := range jobs {
			if err := j.check(context.Background()); err != nil {
				t.Errorf("round %d, after: %v", round, err)
			}
		}
		if heads, err := m.Heads(context.Background()); err != nil || len(heads) != branches+1 {
			t.Errorf("round %d: the mirror's branches %v (%v), want main and %d more", round, heads, err, branches)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}

// TestWorktreeKeepsOthers: making and removing one env's worktree never
// drops another's registration in the mirror, not even one whose
// directory this node cannot see (a node that mounts state_dir at
// another path): envgate never runs "git worktree prune".
func TestWorktreeKeepsOthers(t *testing.T) {
	ctx := context.Background()
	m, c1 := newTestMirror(t, "BRANCH", "main\n")
	root := filepath.Dir(m.Repo)
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if _, err := m.Worktree(ctx, "a", c1, uid, gid); err != nil {
		t.Fatal(err)
	}
	// Env a's worktree as another node registered it: at its own mount
	// point of the state dir, a path this node does not have.
	gitdir := filepath.Join(m.Dir, "worktrees", "a", "gitdir")
	if err := os.WriteFile(gitdir, []byte("/mnt/elsewhere/checkouts/a/.git\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := gitT(t, root, "--git-dir", m.Dir, "worktree", "prune", "--dry-run", "--verbose"); !strings.Contains(out, "a") {
		t.Fatalf("git worktree prune would keep env a's registration (%q): the test proves nothing", out)
	}
	if _, err := m.Worktree(ctx, "b", c1, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveWorktree(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Worktree(ctx, "b", c1, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gitdir); err != nil {
		t.Fatalf("env a's registration is gone after env b's worktree changes: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "worktrees", "b", "HEAD")); err != nil {
		t.Fatalf("env b's registration: %v", err)
	}
}

// TestMirrorLockWait: a fetch into the mirror whose lock another holds
// for longer than LockWait fails with an error naming the repository,
// the lock and its holder; a first clone waits longer (gitTimeout), for
// another node cloning; once the lock is let go both succeed.
func TestMirrorLockWait(t *testing.T) {
	ctx := context.Background()
	m, _ := newTestMirror(t, "BRANCH", "main\n")
	m.LockWait = 100 * time.Millisecond
	other := *m
	other.LockWait = time.Minute
	unlock, err := other.lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cloned := make(chan error, 1)
	go func() { cloned <- m.Sync(ctx) }()
	select {
	case err := <-cloned:
		t.Fatalf("the first clone gave up within 10 LockWaits while another held the lock: %v", err)
	case <-time.After(10 * m.LockWait):
	}
	unlock()
	if err := <-cloned; err != nil {
		t.Fatalf("the first clone, once the lock was let go: %v", err)
	}

	if unlock, err = other.lock(ctx); err != nil {
		t.Fatal(err)
	}
	err = m.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), m.Repo) || !strings.Contains(err.Error(), "another gateway process") ||
		!strings.Contains(err.Error(), m.Dir+".lock") {
		t.Fatalf("a fetch while another holds the lock: %v; want an error naming the repository, the lock and its holder", err)
	}
	unlock()
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("a fetch once the lock is let go: %v", err)
	}
}
