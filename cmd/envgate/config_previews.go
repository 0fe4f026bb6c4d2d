package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/sources"
	"github.com/rs/zerolog"
)

// defaultMirrorRefresh is source.refresh for a git source with a mirror.
const defaultMirrorRefresh = 5 * time.Minute

// isRepoURL reports whether repo is a remote (https://..., ssh://...,
// git@host:path) rather than a local path.
func isRepoURL(repo string) bool {
	if strings.Contains(repo, "://") {
		return true
	}
	at, colon := strings.Index(repo, "@"), strings.Index(repo, ":")
	return at > 0 && colon > at && !strings.HasPrefix(repo, "/")
}

// mirrored reports whether the git source keeps a mirror in state_dir:
// with checkouts (worktrees are made from it) or a remote repository.
func (s *SourceConfig) mirrored() bool {
	return s.Kind == sourceGit && (s.Checkouts || isRepoURL(s.Repo))
}

// validatePreviews checks what previews add: source.checkouts, and that
// prepare steps have a checkout to run in (lifecycle.Template.Prepare
// checks the steps themselves).
func (c *Config) validatePreviews() []error {
	var errs []error
	if c.Source.Checkouts && c.Source.Kind != sourceGit {
		errs = append(errs, c.errAt("source.checkouts", "only for kind git"))
	}
	for i, tc := range c.Templates {
		if len(tc.Prepare) > 0 && !c.Source.Checkouts {
			errs = append(errs, c.errAt(fmt.Sprintf("templates.%d.prepare", i), "prepare steps run in the env's checkout: set source.checkouts: true (with kind git)"))
		}
	}
	return errs
}

// mirror is the git source's mirror and worktrees in state_dir.
func (c *Config) mirror() sources.Mirror {
	root := filepath.Join(c.StateDir, "git")
	return sources.Mirror{Repo: c.Source.Repo, Dir: filepath.Join(root, "mirror.git"), Worktrees: filepath.Join(root, "checkouts")}
}

// gitPreviewSource makes the mirrored git source: the clone or first
// fetch happens here, so an unreachable repository stops serve with an
// error naming the key.
func (c *Config) gitPreviewSource(ctx context.Context, log zerolog.Logger) (lifecycle.Source, error) {
	refresh := time.Duration(c.Source.Refresh)
	if refresh == 0 {
		refresh = defaultMirrorRefresh
	}
	g, err := sources.NewGit(ctx, sources.GitConfig{Mirror: c.mirror(), Refresh: refresh, Log: log})
	if err != nil {
		return nil, c.errAt("source.repo", "%v (is git installed, and can this machine read the repository?)", err)
	}
	return g, nil
}

// checkoutsOf returns src's checkouts when source.checkouts is on, else
// nil (an untyped nil: lifecycle tests Checkouts against nil).
func (c *Config) checkoutsOf(src lifecycle.Source) lifecycle.Checkouts {
	if g, ok := src.(*sources.Git); ok && c.Source.Checkouts {
		return g
	}
	return nil
}

// watchPushes acts on what a refresh of the mirror found: an env whose
// branch moved and that runs restarts on the new commit (its data dir is
// kept; requests in flight finish on the old server); an env whose
// branch is gone is destroyed (stopped, worktree and data dir removed).
// The work runs on goroutines of its own, off the refresh loop; they end
// with ctx's manager (Acquire fails once it is closed).
func watchPushes(ctx context.Context, src lifecycle.Source, envs *lifecycle.Manager, log zerolog.Logger) {
	g, ok := src.(*sources.Git)
	if !ok {
		return
	}
	g.OnChange(func(moved, gone []string) {
		for _, name := range moved {
			if d, ok := envs.Detail(name); !ok || d.State != lifecycle.Ready {
				continue // the next start checks the new commit out
			}
			go func() {
				log.Info().Str("env", name).Msg("branch moved: restarting the env on its new commit")
				if _, err := envs.Restart(ctx, name); err != nil {
					log.Warn().Err(err).Str("env", name).Msg("restart after a push failed")
				}
			}()
		}
		for _, name := range gone {
			go func() {
				err := envs.Destroy(name)
				if rerr := g.RemoveCheckout(ctx, name); rerr != nil {
					log.Warn().Err(rerr).Str("env", name).Msg("remove the worktree of a deleted branch")
				}
				if err != nil {
					log.Warn().Err(err).Str("env", name).Msg("destroy the env of a deleted branch")
					return
				}
				log.Info().Str("env", name).Msg("branch deleted: env destroyed")
			}()
		}
	})
}
