package main

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
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
	if f := c.Source.CredentialsFile; f != "" && (c.Source.Kind != sourceGit || !filepath.IsAbs(f)) {
		errs = append(errs, c.errAt("source.credentials_file", "%q: want the absolute path of a git-credential-store file, with kind git", f))
	}
	for i, tc := range c.Templates {
		if len(tc.Prepare) > 0 && !c.Source.Checkouts {
			errs = append(errs, c.errAt(fmt.Sprintf("templates.%d.prepare", i), "prepare steps run in the env's checkout: set source.checkouts: true (with kind git)"))
		}
	}
	return append(errs, c.validatePreviewsSection()...)
}

// mirror is the git source's mirror and worktrees in state_dir. A change
// of the mirror waits for another's (another node's, in cluster mode)
// as long as an env's start may take.
func (c *Config) mirror() sources.Mirror {
	root := filepath.Join(c.StateDir, "git")
	return sources.Mirror{Repo: c.Source.Repo, Dir: filepath.Join(root, "mirror.git"), Worktrees: filepath.Join(root, "checkouts"),
		CredentialsFile: c.Source.CredentialsFile, LockWait: cmp.Or(c.maxReadyTimeout(), lifecycle.DefaultStartTimeout)}
}

// gitPreviewSource makes the mirrored git source: the clone or first
// fetch happens here, so an unreachable repository stops serve with an
// error naming the key.
func (c *Config) gitPreviewSource(ctx context.Context, log zerolog.Logger) (sources.Source, error) {
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
func (c *Config) checkoutsOf(src sources.Source) lifecycle.Checkouts {
	if g, ok := src.(*sources.Git); ok && c.Source.Checkouts {
		return g
	}
	return nil
}

// PreviewsConfig is the previews: section: webhooks that tell envgate of
// pushes and pull requests, and what envgate tells pull requests back.
type PreviewsConfig struct {
	// Host receives the webhooks, on /_envgate/webhooks/github and
	// /_envgate/webhooks/gitlab. Default: the first domain itself (e.g.
	// dev.example.com).
	Host string `yaml:"host"`
	// GitHub: webhooks signed with the secret in secret_file; with a
	// token_file, deployments (environment preview/<env>) and one comment
	// per pull request of repo (owner/name) through api (default
	// https://api.github.com).
	GitHub *GitHubPreviews `yaml:"github"`
	// GitLab: webhooks carrying the token in secret_file as
	// X-Gitlab-Token; with a token_file, an environment preview/<env>
	// with the env's URL (the merge request's "View app") and one note
	// per merge request of project (group/name) through api (default
	// https://gitlab.com/api/v4).
	GitLab *GitLabPreviews `yaml:"gitlab"`
	// OnPush is what a push does to a running env: restart (default) it
	// on the new commit as soon as the fetch lands, or next-request: mark
	// it stale and restart it when its next request comes.
	OnPush string `yaml:"on_push"`
	// DestroyAfter removes the checkout and data dir of envs that had no
	// request for this long. Default 0: never.
	DestroyAfter Duration `yaml:"destroy_after"`
	// PreStart starts a pull request's env when a webhook says the pull
	// request was opened, reopened or synchronized (after the fetch), so
	// its first visitor finds it ready (the idle timeout stops it again);
	// the pull request is told of its preview once the start is done.
	// Default false: an env starts at its first request.
	PreStart bool `yaml:"pre_start"`
}

// GitHubPreviews is previews.github.
type GitHubPreviews struct {
	SecretFile string `yaml:"secret_file"`
	TokenFile  string `yaml:"token_file"`
	Repo       string `yaml:"repo"`
	API        string `yaml:"api"`
}

// GitLabPreviews is previews.gitlab.
type GitLabPreviews struct {
	SecretFile string `yaml:"secret_file"`
	TokenFile  string `yaml:"token_file"`
	Project    string `yaml:"project"`
	API        string `yaml:"api"`
}

// on_push values.
const (
	onPushRestart     = "restart"
	onPushNextRequest = "next-request"
)

var ownerRepoRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)

// previewsHost is previews.host with its default, the first domain.
func (c *Config) previewsHost() string {
	h := ""
	if c.Previews != nil {
		h = c.Previews.Host
	}
	if h == "" && len(c.Domains) > 0 {
		h = c.Domains[0]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// webhookHosts is what certs.Config.Hosts gets: previews.host when
// webhooks are configured (it is no env's hostname, so the certificate
// decision would refuse it otherwise).
func (c *Config) webhookHosts() []string {
	if p := c.Previews; p != nil && (p.GitHub != nil || p.GitLab != nil) && c.previewsHost() != "" {
		return []string{c.previewsHost()}
	}
	return nil
}

// validatePreviewsSection checks previews:, defaulting host and on_push.
func (c *Config) validatePreviewsSection() []error {
	p := c.Previews
	if p == nil {
		return nil
	}
	var errs []error
	add := func(field, msg string, args ...any) { errs = append(errs, c.errAt("previews."+field, msg, args...)) }
	if c.Source.Kind != sourceGit {
		errs = append(errs, c.errAt("previews", "previews need source.kind: git"))
	}
	p.Host = c.previewsHost()
	switch p.OnPush {
	case "":
		p.OnPush = onPushRestart
	case onPushRestart, onPushNextRequest:
	default:
		add("on_push", "%q: want restart or next-request", p.OnPush)
	}
	if gh := p.GitHub; gh != nil {
		if !filepath.IsAbs(gh.SecretFile) {
			add("github.secret_file", "%q: want the absolute path of the webhook secret's file", gh.SecretFile)
		}
		if gh.TokenFile != "" && !filepath.IsAbs(gh.TokenFile) {
			add("github.token_file", "%q: want an absolute path", gh.TokenFile)
		}
		if gh.TokenFile != "" && !ownerRepoRE.MatchString(gh.Repo) {
			add("github.repo", "%q: want owner/name, e.g. acme/app (needed with token_file)", gh.Repo)
		}
		if u, err := url.Parse(gh.API); gh.API != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
			add("github.api", "%q: want a URL, e.g. https://api.github.com", gh.API)
		}
	}
	if gl := p.GitLab; gl != nil {
		if !filepath.IsAbs(gl.SecretFile) {
			add("gitlab.secret_file", "%q: want the absolute path of the webhook token's file", gl.SecretFile)
		}
		if gl.TokenFile != "" && !filepath.IsAbs(gl.TokenFile) {
			add("gitlab.token_file", "%q: want an absolute path", gl.TokenFile)
		}
		if gl.TokenFile != "" && gl.Project == "" {
			add("gitlab.project", "needed with token_file: the project's path (group/name) or numeric ID")
		}
		if u, err := url.Parse(gl.API); gl.API != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
			add("gitlab.api", "%q: want a URL, e.g. https://gitlab.com/api/v4", gl.API)
		}
	}
	return errs
}
