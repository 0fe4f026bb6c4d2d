package sources

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
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
type Mirror struct {
	Repo      string
	Dir       string // the mirror's git dir, e.g. <state_dir>/git/mirror.git
	Worktrees string // parent of the worktrees, e.g. <state_dir>/git/checkouts
	// CredentialsFile, if set, is a git-credential-store file (lines of
	// https://user:token@host) the clone and fetches take credentials
	// from; other credential helpers are then not asked. Default "": the
	// mirror's own config (and, for ssh, root's keys).
	CredentialsFile string
}

// credentialEnv is the environment that makes git take credentials from
// file alone (GIT_CONFIG_COUNT adds config, as -c would), nil for none.
func credentialEnv(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"GIT_CONFIG_COUNT=2",
		"GIT_CONFIG_KEY_0=credential.helper", "GIT_CONFIG_VALUE_0=",
		"GIT_CONFIG_KEY_1=credential.helper", "GIT_CONFIG_VALUE_1=store --file=" + file}
}

// gitDir runs git on the mirror.
func (m *Mirror) git(ctx context.Context, args ...string) ([]byte, error) {
	return runGit(ctx, []string{"GIT_DIR=" + m.Dir}, args...)
}

// Sync clones the mirror if it does not exist yet, else fetches into it
// (branches deleted upstream are pruned). The mirror is root's alone
// (0700): its config may hold credentials, and it holds every branch,
// while dev servers, which can reach the state dir to get to their data
// dirs, must see only their own checkout.
func (m *Mirror) Sync(ctx context.Context) error {
	if err := m.sync(ctx); err != nil {
		return err
	}
	if err := os.Chmod(m.Dir, 0o700); err != nil {
		return fmt.Errorf("sources: mirror: %w", err)
	}
	return nil
}

func (m *Mirror) sync(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(m.Dir, "HEAD")); err != nil {
		if err := os.MkdirAll(filepath.Dir(m.Dir), 0o711); err != nil {
			return fmt.Errorf("sources: mirror: %w", err)
		}
		tmp := m.Dir + ".new"
		os.RemoveAll(tmp)
		// Made 0700 before git fills it, so the clone is never readable.
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return fmt.Errorf("sources: mirror: %w", err)
		}
		if _, err := runGit(ctx, credentialEnv(m.CredentialsFile), "clone", "--mirror", "--quiet", "--", m.Repo, tmp); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("sources: mirror %s: %w", m.Repo, err)
		}
		if err := os.Rename(tmp, m.Dir); err != nil {
			return fmt.Errorf("sources: mirror: %w", err)
		}
		return nil
	}
	fetch := append([]string{"GIT_DIR=" + m.Dir}, credentialEnv(m.CredentialsFile)...)
	if _, err := runGit(ctx, fetch, "fetch", "--prune", "--quiet", "origin"); err != nil {
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
	heads := make(map[string]string)
	for line := range strings.SplitSeq(string(out), "\n") {
		sha, ref, ok := strings.Cut(line, " ")
		if b, isHead := strings.CutPrefix(ref, "refs/heads/"); ok && isHead {
			heads[b] = sha
		}
	}
	return heads, nil
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
// the worktree's path.
func (m *Mirror) Worktree(ctx context.Context, env, commit string, uid, gid int) (string, error) {
	dir := filepath.Join(m.Worktrees, env)
	if _, err := os.Stat(filepath.Join(m.Dir, "worktrees", env, "HEAD")); err != nil {
		if err := os.MkdirAll(m.Worktrees, 0o711); err != nil {
			return "", fmt.Errorf("sources: worktree %s: %w", env, err)
		}
		// Leftovers of a worktree whose admin dir is gone.
		os.RemoveAll(dir)
		m.git(ctx, "worktree", "prune")
		// Made 0700 before git fills it: one env's code is not another's
		// to read, not even while it is being checked out.
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("sources: worktree %s: %w", env, err)
		}
		if _, err := m.git(ctx, "worktree", "add", "--detach", "--quiet", dir, commit); err != nil {
			return "", fmt.Errorf("sources: worktree %s: %w", env, err)
		}
	} else {
		head, err := m.worktreeGit(ctx, env, "rev-parse", "HEAD")
		if err != nil || strings.TrimSpace(string(head)) != commit {
			if _, err := m.worktreeGit(ctx, env, "checkout", "--force", "--detach", "--quiet", commit); err != nil {
				return "", fmt.Errorf("sources: worktree %s: %w", env, err)
			}
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

// RemoveWorktree removes env's worktree; one that is gone is success.
func (m *Mirror) RemoveWorktree(ctx context.Context, env string) error {
	err := os.RemoveAll(filepath.Join(m.Worktrees, env))
	if _, perr := m.git(ctx, "worktree", "prune"); perr != nil && err == nil {
		err = perr
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
	out, err := runGit(ctx, credentialEnv(credentialsFile), "ls-remote", "--heads", "--", repo)
	if err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	heads := make(map[string]string)
	for line := range strings.SplitSeq(string(out), "\n") {
		sha, ref, ok := strings.Cut(line, "\t")
		if b, isHead := strings.CutPrefix(ref, "refs/heads/"); ok && isHead {
			heads[b] = sha
		}
	}
	return heads, nil
}
