package sources

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envgate/envgate/lifecycle/cluster/sharedfile"
)

// gitTimeout bounds one git command, so a hung remote never stops the
// refresh loop or a start for good.
const gitTimeout = 5 * time.Minute

// runGit runs git with a clean environment: nothing of the gateway's own
// (no GIT_* variables, no credentials in variables), no prompts. Its
// output is returned; a failure carries git's stderr.
func runGit(ctx context.Context, env []string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append([]string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=/nonexistent",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"LC_ALL=C",
	}, env...)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		return nil, fmt.Errorf("git %s: %w: %s", args[0], err, msg)
	}
	return out, nil
}

// Mirror is a mirror clone of a repository (a URL or a local path) kept
// at Dir, with worktrees for envs under Worktrees.
//
// Its methods may run at once from any number of goroutines and
// processes, on any machine that mounts Dir (the nodes of a cluster
// share state_dir): every git command that changes the mirror itself
// (clone, fetch, adding or removing a worktree) runs under an exclusive
// flock of Dir+".lock", so they wait for each other where git's own lock
// files would make all but one fail ("cannot lock ref"). What changes
// one env's worktree alone (the checkout of its files, moving it to a
// new commit) runs without that lock, so envs start side by side; the
// callers run one env's calls one at a time (one owner per env).
type Mirror struct {
	Repo      string
	Dir       string // the mirror's git dir, e.g. <state_dir>/git/mirror.git
	Worktrees string // parent of the worktrees, e.g. <state_dir>/git/checkouts
	// CredentialsFile, if set, is a git-credential-store file (lines of
	// https://user:token@host) the clone and fetches take credentials
	// from; other credential helpers are then not asked. Default "": the
	// mirror's own config (and, for ssh, root's keys).
	CredentialsFile string
	// LockWait is how long a change of the mirror waits for its lock
	// while another holds it (another node's fetch, or this gateway's
	// own) before it fails with an error that says so. Default 0:
	// gitTimeout, the longest one git command may run.
	LockWait time.Duration
}

// configEnv is the environment that adds git config pairs (key, value,
// key, value...) to one command, as -c would, nil for none.
func configEnv(kv ...string) []string {
	if len(kv) == 0 {
		return nil
	}
	env := []string{"GIT_CONFIG_COUNT=" + strconv.Itoa(len(kv)/2)}
	for i := 0; i+1 < len(kv); i += 2 {
		n := strconv.Itoa(i / 2)
		env = append(env, "GIT_CONFIG_KEY_"+n+"="+kv[i], "GIT_CONFIG_VALUE_"+n+"="+kv[i+1])
	}
	return env
}

// credentialConfig is the config that makes git take credentials from
// file alone, nil for none.
func credentialConfig(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"credential.helper", "", "credential.helper", "store --file=" + file}
}

// mirrorConfig is the config of every git command on the mirror. The
// maintenance git runs after a fetch (gc --auto) stays in the
// foreground, so it ends before the mirror's lock is let go instead of
// racing the next holder; and it never prunes worktrees: git takes a
// worktree whose directory it cannot see for gone, and a node that
// mounts state_dir at another path cannot see the others'.
var mirrorConfig = []string{
	"gc.autoDetach", "false",
	"maintenance.autoDetach", "false",
	"gc.worktreePruneExpire", "never",
}

// git runs git on the mirror.
func (m *Mirror) git(ctx context.Context, args ...string) ([]byte, error) {
	return runGit(ctx, append([]string{"GIT_DIR=" + m.Dir}, configEnv(mirrorConfig...)...), args...)
}

// errLockWait is the cause of a lock wait that ran out of LockWait.
var errLockWait = errors.New("lock wait over")

// lock takes the mirror's lock, waiting at most LockWait (and no longer
// than ctx allows), and returns the function that lets it go.
func (m *Mirror) lock(ctx context.Context) (unlock func(), err error) {
	return m.lockFor(ctx, cmp.Or(m.LockWait, gitTimeout))
}

// lockFor is lock with a wait of its own.
func (m *Mirror) lockFor(ctx context.Context, wait time.Duration) (unlock func(), err error) {
	lctx, cancel := context.WithTimeoutCause(ctx, wait, errLockWait)
	defer cancel()
	path := m.Dir + ".lock"
	unlock, err = sharedfile.Lock(lctx, path)
	switch {
	case err == nil:
		return unlock, nil
	case errors.Is(err, errLockWait):
		return nil, fmt.Errorf("sources: repository %s: its mirror %s is locked (%s) by another gateway process, on this node or another node sharing state_dir, whose git command has not ended in %s; the next fetch or start tries again: %w",
			m.Repo, m.Dir, path, wait, err)
	default:
		return nil, fmt.Errorf("sources: repository %s: %w", m.Repo, err)
	}
}

// Sync clones the mirror if it does not exist yet, else fetches into it
// (branches deleted upstream are pruned). The mirror is root's alone
// (0700): its config may hold credentials, and it holds every branch,
// while dev servers, which can reach the state dir to get to their data
// dirs, must see only their own checkout.
//
// The first Sync of a mirror that is not there yet waits for its lock
// as long as one git command may run, not only LockWait: the holder is
// most likely another node cloning it, which takes as long as the
// repository is large, and this node cannot start without it.
func (m *Mirror) Sync(ctx context.Context) error {
	wait := cmp.Or(m.LockWait, gitTimeout)
	if _, err := os.Stat(filepath.Join(m.Dir, "HEAD")); err != nil {
		wait = max(wait, gitTimeout)
	}
	unlock, err := m.lockFor(ctx, wait)
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.syncLocked(ctx); err != nil {
		return err
	}
	if err := os.Chmod(m.Dir, 0o700); err != nil {
		return fmt.Errorf("sources: mirror: %w", err)
	}
	return nil
}

// syncLocked is Sync's clone or fetch; the mirror's lock is held, so
// whether the mirror exists does not change under it.
func (m *Mirror) syncLocked(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(m.Dir, "HEAD")); err != nil {
		tmp := m.Dir + ".new"
		os.RemoveAll(tmp)
		// Made 0700 before git fills it, so the clone is never readable.
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return fmt.Errorf("sources: mirror: %w", err)
		}
		env := configEnv(slices.Concat(mirrorConfig, credentialConfig(m.CredentialsFile))...)
		if _, err := runGit(ctx, env, "clone", "--mirror", "--quiet", "--", m.Repo, tmp); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("sources: mirror %s: %w", m.Repo, err)
		}
		if err := os.Rename(tmp, m.Dir); err != nil {
			return fmt.Errorf("sources: mirror: %w", err)
		}
		return nil
	}
	env := append([]string{"GIT_DIR=" + m.Dir}, configEnv(slices.Concat(mirrorConfig, credentialConfig(m.CredentialsFile))...)...)
	if _, err := runGit(ctx, env, "fetch", "--prune", "--quiet", "origin"); err != nil {
		return fmt.Errorf("sources: fetch %s: %w", m.Repo, err)
	}
	return nil
}

// Heads returns the mirror's branches and their head commits.
func (m *Mirror) Heads(ctx context.Context) (map[string]string, error) {
	return readHeads(ctx, m.Dir)
}

// readHeads returns the branches of the repository whose git dir is
// gitDir and their head commits. It is the one branch lister of this
// package: the mirror and NewBranches both read through it.
func readHeads(ctx context.Context, gitDir string) (map[string]string, error) {
	// %(refname), not %(refname:short): the short form of branch main is
	// heads/main when a tag main exists too. An explicit GIT_DIR also
	// skips git's safe.directory ownership check, which would refuse a
	// repository owned by another user than the gateway's.
	out, err := runGit(ctx, []string{"GIT_DIR=" + gitDir}, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads")
	if err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	return parseHeads(out, " "), nil
}

// parseHeads reads git's lines of "<commit><sep>refs/heads/<branch>" into
// branch → commit; other refs are skipped.
func parseHeads(out []byte, sep string) map[string]string {
	heads := make(map[string]string)
	for line := range strings.SplitSeq(string(out), "\n") {
		sha, ref, ok := strings.Cut(line, sep)
		if b, isHead := strings.CutPrefix(ref, "refs/heads/"); ok && isHead {
			heads[b] = sha
		}
	}
	return heads
}

// worktreeGit runs git on env's worktree. GIT_DIR and GIT_WORK_TREE are
// given, so git never reads the worktree's own .git file, which the env's
// user could replace with a repository whose config runs commands.
func (m *Mirror) worktreeGit(ctx context.Context, env string, args ...string) ([]byte, error) {
	return runGit(ctx, []string{
		"GIT_DIR=" + filepath.Join(m.Dir, "worktrees", env),
		"GIT_WORK_TREE=" + filepath.Join(m.Worktrees, env),
	}, args...)
}

// Worktree makes env's worktree at commit (detached), or moves an
// existing one there with a forced checkout (never a merge: the preview
// shows the branch as pushed), then makes it all uid:gid's. It returns
// the worktree's path. Only registering a new worktree in the mirror
// takes the mirror's lock; the checkout of its files does not.
func (m *Mirror) Worktree(ctx context.Context, env, commit string, uid, gid int) (string, error) {
	dir := filepath.Join(m.Worktrees, env)
	_, errMeta := os.Stat(filepath.Join(m.Dir, "worktrees", env, "HEAD"))
	_, errDir := os.Stat(dir)
	added := errMeta != nil || errDir != nil
	if added {
		if err := m.addWorktree(ctx, env, dir, commit); err != nil {
			return "", fmt.Errorf("sources: worktree %s: %w", env, err)
		}
	}
	head, err := m.worktreeGit(ctx, env, "rev-parse", "HEAD")
	// A new worktree has its HEAD at commit but no files yet.
	if added || err != nil || strings.TrimSpace(string(head)) != commit {
		if _, err := m.worktreeGit(ctx, env, "checkout", "--force", "--detach", "--quiet", commit); err != nil {
			return "", fmt.Errorf("sources: worktree %s: %w", env, err)
		}
	}
	if err := chownTree(dir, uid, gid); err != nil {
		return "", fmt.Errorf("sources: worktree %s: %w", env, err)
	}
	// One env's code is not another's to read.
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("sources: worktree %s: %w", env, err)
	}
	return dir, nil
}

// addWorktree registers an empty worktree of env at dir in the mirror,
// its HEAD at commit, replacing what is left of an earlier one.
func (m *Mirror) addWorktree(ctx context.Context, env, dir, commit string) error {
	if err := os.MkdirAll(m.Worktrees, 0o711); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	// Made 0700 before git fills it: one env's code is not another's
	// to read, not even while it is being checked out.
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	unlock, err := m.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	// This env's registration alone goes, never others' (no "worktree
	// prune"): git would take the worktrees of a node that mounts
	// state_dir at another path for gone. What remains of it would make
	// git register the new one under another name.
	if err := os.RemoveAll(filepath.Join(m.Dir, "worktrees", env)); err != nil {
		return err
	}
	_, err = m.git(ctx, "worktree", "add", "--detach", "--no-checkout", "--quiet", dir, commit)
	return err
}

// RemoveWorktree removes env's worktree and its registration in the
// mirror (under the mirror's lock); one that is gone is success.
func (m *Mirror) RemoveWorktree(ctx context.Context, env string) error {
	err := os.RemoveAll(filepath.Join(m.Worktrees, env))
	if err == nil {
		var unlock func()
		if unlock, err = m.lock(ctx); err == nil {
			err = os.RemoveAll(filepath.Join(m.Dir, "worktrees", env))
			unlock()
		}
	}
	if err != nil {
		return fmt.Errorf("sources: remove worktree %s: %w", env, err)
	}
	return nil
}

// chownTree makes every file under dir uid:gid's, never following links
// (Lchown; WalkDir does not descend into linked directories).
func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// RemoteHeads lists repo's branches and head commits with git ls-remote
// (a URL or a local path; no mirror needed), with credentials from
// credentialsFile if set (see Mirror.CredentialsFile).
func RemoteHeads(ctx context.Context, repo, credentialsFile string) (map[string]string, error) {
	out, err := runGit(ctx, configEnv(credentialConfig(credentialsFile)...), "ls-remote", "--heads", "--", repo)
	if err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	return parseHeads(out, "\t"), nil
}
