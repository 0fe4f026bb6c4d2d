package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/envgate/envgate/lifecycle/sources"
	"github.com/rs/zerolog"
)

// SourceConfig is the source: section: which env names exist. The gateway
// answers a name the source does not allow with 404 no_such_env, and no
// certificate is issued for it.
type SourceConfig struct {
	// Kind is any (default: every name a template matches), list, dir or
	// git.
	Kind string `yaml:"kind"`
	// Names, for kind list, are the allowed env names.
	Names []string `yaml:"names"`
	// Path, for kind dir, is a directory whose subdirectories' names are
	// the allowed env names (e.g. one checkout per branch).
	Path string `yaml:"path"`
	// Repo, for kind git, is a repository whose branches, mapped to DNS
	// labels, are the allowed env names: a local path (bare, or a work
	// tree) or a URL (https://..., ssh://..., git@host:path), of which
	// envgate keeps a mirror in state_dir/git.
	Repo string `yaml:"repo"`
	// Refresh, for kinds dir and git, is how often the names are re-read
	// (the mirror fetched), in the background. Default 5s, or 5m with a
	// mirror.
	Refresh Duration `yaml:"refresh"`
	// Checkouts, for kind git, gives each env a worktree of its branch's
	// head, made on its first start and moved to the new head when the
	// branch moves (templates use it as {{.Checkout}}); it implies a
	// mirror in state_dir/git. Default false.
	Checkouts bool `yaml:"checkouts"`
	// CredentialsFile, for kind git with a remote repo, is a
	// git-credential-store file (lines of https://user:token@host, e.g. a
	// deploy token; root-only, 0600) the mirror's clone and fetches, and
	// envgate url, take credentials from. Default "": the mirror's own
	// config, or root's ssh keys for ssh URLs.
	CredentialsFile string `yaml:"credentials_file"`
}

// source: kinds.
const (
	sourceAny  = "any"
	sourceList = "list"
	sourceDir  = "dir"
	sourceGit  = "git"
)

// validateSource checks the source: section, defaulting kind to any. It
// does not look at path or repo: serve reads them, and fails if it cannot.
func (c *Config) validateSource() []error {
	s := &c.Source
	var errs []error
	add := func(field, msg string, args ...any) { errs = append(errs, c.errAt("source."+field, msg, args...)) }
	if s.Kind == "" {
		s.Kind = sourceAny
	}
	switch s.Kind {
	case sourceAny:
	case sourceList:
		if len(s.Names) == 0 {
			add("names", "kind list needs names, e.g. names: [main, feature-x]")
		}
		for i, n := range s.Names {
			if !envname.Valid(n) {
				add(fmt.Sprintf("names.%d", i), "%q is not an env name: want a lowercase DNS label (1-63 of a-z, 0-9 and '-' inside)", n)
			}
		}
	case sourceDir:
		if !filepath.IsAbs(s.Path) {
			add("path", "%q: kind dir needs an absolute path, e.g. /srv/checkouts", s.Path)
		}
	case sourceGit:
		if !filepath.IsAbs(s.Repo) && !isRepoURL(s.Repo) {
			add("repo", "%q: kind git needs a repository URL or absolute path, e.g. https://github.com/acme/app.git or /srv/repo.git", s.Repo)
		}
	default:
		add("kind", "%q: want any, list, dir or git", s.Kind)
		return errs
	}
	// A key of another kind is a mistake (kind: dir with names:), not
	// something to ignore.
	if s.Kind != sourceList && len(s.Names) > 0 {
		add("names", "only for kind list")
	}
	if s.Kind != sourceDir && s.Path != "" {
		add("path", "only for kind dir")
	}
	if s.Kind != sourceGit && s.Repo != "" {
		add("repo", "only for kind git")
	}
	switch r := time.Duration(s.Refresh); {
	case r != 0 && s.Kind != sourceDir && s.Kind != sourceGit:
		add("refresh", "only for kinds dir and git")
	case r != 0 && r < 100*time.Millisecond:
		add("refresh", "%v: want 100ms or more (default 5s)", r)
	}
	return errs
}

// envSource makes the env source: the first read of a dir or git source
// happens here, so a missing directory or repository stops serve with an
// error naming the key. Close it after the lifecycle manager.
func (c *Config) envSource(ctx context.Context, log zerolog.Logger) (sources.Source, error) {
	s := c.Source
	refresh := time.Duration(s.Refresh)
	switch s.Kind {
	case sourceList:
		src, err := sources.NewList(s.Names)
		if err != nil {
			return nil, c.errAt("source.names", "%v", err)
		}
		return src, nil
	case sourceDir:
		src, err := sources.NewDir(ctx, s.Path, refresh, log)
		if err != nil {
			return nil, c.errAt("source.path", "%v (create the directory, or fix the path)", err)
		}
		return src, nil
	case sourceGit:
		if s.mirrored() {
			return c.gitPreviewSource(ctx, log)
		}
		src, err := sources.NewBranches(ctx, s.Repo, refresh, log)
		if err != nil {
			return nil, c.errAt("source.repo", "%v (is git installed, and is this a repository?)", err)
		}
		return src, nil
	default:
		return sources.NewAny(), nil
	}
}
