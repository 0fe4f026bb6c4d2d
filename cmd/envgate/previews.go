package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envgate/envgate/gateway/webhook"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/envgate/envgate/lifecycle/sources"
	"github.com/rs/zerolog"
)

// previews runs pull-request previews for serve: it acts on what a
// refresh of the mirror found (restart or mark stale the envs of moved
// branches, destroy those of deleted ones), on webhooks, and on
// destroy_after; and tells GitHub. Its goroutines end at Close.
type previews struct {
	cfg  *Config
	git  *sources.Git // nil: not a mirrored git source, previews do nothing
	envs *lifecycle.Manager
	tell []forge      // GitHub and GitLab, with their token_file
	hook http.Handler // nil without webhooks
	host string       // previews.host
	// preStart: previews.pre_start, start a pull request's env at once.
	preStart bool
	log      zerolog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pulls *prMap // open pull requests, kept in state_dir (previews_prs.go)
	// cluster, in cluster mode, is told of each webhook, so that every
	// node fetches (the owner of a moved env restarts it), and destroys
	// an env on the node that owns it. Set before webhooks are served.
	cluster previewsCluster
	// relayed counts fetches for another node's webhook under way: that
	// node tells the forge and destroys the envs of deleted branches, so
	// changed here only restarts (or marks stale) the envs this node runs.
	relayed atomic.Int32

	mu    sync.Mutex
	stale map[string]struct{} // guarded by mu; envs to restart at their next request
}

// previewsCluster is what previews need of the cluster (cluster.go).
type previewsCluster interface {
	// SyncOthers asks the other live nodes to fetch now, as this one
	// does on a webhook: each acts on the envs it runs.
	SyncOthers()
	// DestroyRemote destroys env on the other node that owns it and
	// reports whether one did (false: this node or none owns it).
	DestroyRemote(env string) (bool, error)
}

// forge tells pull (merge) requests about their previews: sources.GitHub
// or sources.GitLab. Calls return at once; the API calls happen later.
type forge interface {
	Deployed(env, commit, url string)
	// Destroyed: deployments are the IDs recorded for env (GitHub's).
	Destroyed(env string, deployments []int64)
	Comment(pr int, text string)
	Close()
}

// startPreviews starts what previews need; Close stops it. Without a
// mirrored git source it only returns a previews whose front is a
// pass-through.
func (c *Config) startPreviews(ctx context.Context, src sources.Source, envs *lifecycle.Manager, log zerolog.Logger) (*previews, error) {
	ctx, cancel := context.WithCancel(ctx)
	p := &previews{cfg: c, envs: envs, log: log, ctx: ctx, cancel: cancel, stale: make(map[string]struct{})}
	p.git, _ = src.(*sources.Git)
	if p.git == nil {
		return p, nil
	}
	var err error
	if p.pulls, err = loadPRMap(filepath.Join(c.StateDir, prsFile), log); err != nil {
		cancel()
		return nil, err
	}
	pc := c.Previews
	if pc == nil {
		pc = &PreviewsConfig{OnPush: onPushRestart}
	}
	p.host = pc.Host
	p.preStart = pc.PreStart
	// Delivery IDs seen survive restarts and are shared by the nodes of a
	// cluster: a replay is refused by the next gateway process, and by
	// every node, too.
	wcfg := webhook.Config{Events: p, Log: log, SeenFile: filepath.Join(c.StateDir, "webhook-deliveries")}
	read := func(field, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err == nil && len(strings.TrimSpace(string(b))) == 0 {
			err = errors.New("empty")
		}
		if err != nil {
			return nil, c.errAt(field, "%v", err)
		}
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if gh := pc.GitHub; gh != nil {
		if wcfg.GitHubSecret, err = read("previews.github.secret_file", gh.SecretFile); err != nil {
			cancel()
			return nil, err
		}
		if gh.TokenFile != "" {
			tok, err := read("previews.github.token_file", gh.TokenFile)
			if err != nil {
				cancel()
				return nil, err
			}
			g := sources.NewGitHub(gh.API, gh.Repo, string(tok), log.With().Str("component", "github").Logger())
			g.OnDeployment = p.deploymentMade
			p.tell = append(p.tell, g)
		}
	}
	if gl := pc.GitLab; gl != nil {
		if wcfg.GitLabToken, err = read("previews.gitlab.secret_file", gl.SecretFile); err != nil {
			p.Close()
			return nil, err
		}
		if gl.TokenFile != "" {
			tok, err := read("previews.gitlab.token_file", gl.TokenFile)
			if err != nil {
				p.Close()
				return nil, err
			}
			p.tell = append(p.tell, sources.NewGitLab(gl.API, gl.Project, string(tok), log.With().Str("component", "gitlab").Logger()))
		}
	}
	if wcfg.GitHubSecret != nil || wcfg.GitLabToken != nil {
		p.hook = webhook.New(wcfg)
	}
	p.git.OnChange(func(moved, gone []string) { p.changed(pc.OnPush, moved, gone) })
	if ttl := time.Duration(pc.DestroyAfter); ttl > 0 {
		p.wg.Go(func() { p.ttlLoop(ttl) })
	}
	return p, nil
}

// Close stops the goroutines previews started and waits for them.
func (p *previews) Close() {
	p.cancel()
	p.wg.Wait()
	for _, f := range p.tell {
		f.Close()
	}
}

// front returns next with the webhooks in front of it on previews.host
// (authenticated by their signature, not by access control), and stale
// envs restarted before their next request reaches next.
func (p *previews) front(next http.Handler) http.Handler {
	if p.git == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.TrimSuffix(strings.ToLower(r.Host), ".")
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if p.hook != nil && host == p.host && strings.HasPrefix(r.URL.Path, "/_envgate/webhooks/") {
			p.hook.ServeHTTP(w, r)
			return
		}
		if env, domain, ok := strings.Cut(host, "."); ok && slices.Contains(p.cfg.Domains, domain) && p.isStale(env) {
			// This runs before access control, so it only stops an env
			// with nothing in flight (a restart that was due anyway); a
			// busy one stays stale until a request finds it idle.
			if p.envs.StopIdle(env, "its branch moved (on_push: next-request)") {
				p.clearStale(env)
				p.log.Info().Str("env", env).Msg("stale env stopped: its next start runs its branch's new commit")
			} else if d, ok := p.envs.Detail(env); !ok || d.State != lifecycle.Ready {
				p.clearStale(env) // stopped meanwhile: its next start checks the new commit out
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (p *previews) isStale(env string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.stale[env]
	return ok
}

func (p *previews) clearStale(env string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.stale, env)
}

// changed acts on a refresh: a running env whose branch moved restarts
// on the new commit (on_push: restart) or is marked stale (next-request;
// an env not running checks the new commit out at its next start); an
// env whose branch is gone is destroyed.
func (p *previews) changed(onPush string, moved, gone []string) {
	if p.ctx.Err() != nil {
		return // shutting down: the next gateway sees the change
	}
	quiet := p.relayed.Load() > 0
	for _, name := range moved {
		d, ok := p.envs.Detail(name)
		running := ok && d.State == lifecycle.Ready
		if running && onPush == onPushNextRequest {
			p.mu.Lock()
			p.stale[name] = struct{}{}
			p.mu.Unlock()
		} else if running {
			p.wg.Go(func() { p.restart(name) })
		}
		if !quiet {
			p.deployed(name)
		}
	}
	if quiet {
		return
	}
	for _, name := range gone {
		p.wg.Go(func() { p.destroy(name, "branch deleted", p.pulls.deploymentsOf(name)) })
	}
}

// restartDrain bounds how long a restart after a push waits for the
// env's requests in flight (and streams) to finish on the old server
// before it stops it anyway.
const restartDrain = 30 * time.Second

// restart stops env once nothing is in flight (or restartDrain has
// passed) and starts it again on its branch's new commit.
func (p *previews) restart(env string) {
	p.log.Info().Str("env", env).Msg("branch moved: restarting the env on its new commit once its requests are done")
	const reason = "its branch moved (on_push: restart)"
	deadline := time.Now().Add(restartDrain)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !p.envs.StopIdle(env, reason) {
		if d, ok := p.envs.Detail(env); !ok || d.State != lifecycle.Ready {
			return // stopped meanwhile: its next start checks the new commit out
		}
		if time.Now().After(deadline) {
			p.envs.Stop(env, reason+", after waiting for its requests")
			break
		}
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
	}
	l, err := p.envs.Acquire(p.ctx, env)
	if err != nil {
		p.log.Warn().Err(err).Str("env", env).Msg("restart after a push failed")
		return
	}
	l.Release()
}

// deployed tells GitHub that env serves its branch's head.
func (p *previews) deployed(env string) {
	if len(p.tell) == 0 {
		return
	}
	branch, commit, ok := p.git.Branch(env)
	if !ok {
		return
	}
	u := envURL(p.cfg, env, p.cfg.Domains[0])
	for _, f := range p.tell {
		f.Deployed(env, commit, u)
	}
	if pr, ok := p.pulls.byBranch(branch); ok {
		text := fmt.Sprintf("Preview of `%s`: %s\n\nCommit %.12s, updated %s.",
			branch, u, commit, time.Now().UTC().Format(time.RFC3339))
		for _, f := range p.tell {
			f.Comment(pr.Number, text)
		}
	}
}

// destroy stops env and removes its worktree, data dir and certificate
// (envRemains), and tells GitHub (marking deployments inactive, those
// recorded for its pull requests among them). In cluster mode the node
// that runs env destroys it.
func (p *previews) destroy(env, why string, deployments []int64) {
	if p.cluster != nil {
		if remote, err := p.cluster.DestroyRemote(env); err != nil {
			p.log.Warn().Err(err).Str("env", env).Str("why", why).Msg("destroy env on the node that runs it")
			return
		} else if remote {
			p.log.Info().Str("env", env).Str("why", why).Msg("env destroyed by the node that ran it")
			for _, f := range p.tell {
				f.Destroyed(env, deployments)
			}
			return
		}
	}
	if err := p.envs.Destroy(env); err != nil {
		p.log.Warn().Err(err).Str("env", env).Str("why", why).Msg("destroy env")
		return
	}
	p.log.Info().Str("env", env).Str("why", why).Msg("env destroyed: worktree, data dir and certificate removed")
	for _, f := range p.tell {
		f.Destroyed(env, deployments)
	}
}

// sync fetches on a webhook's word, off the request's goroutine; what
// moved is then handled by changed. In cluster mode the other nodes
// fetch next, each for the envs it runs (after this fetch: they share
// the mirror, and fetches into it wait for each other's lock).
func (p *previews) sync(after func()) {
	p.wg.Go(func() {
		p.fetch(after)
		if p.cluster != nil {
			p.cluster.SyncOthers()
		}
	})
}

// syncRelayed is sync for this node alone, on another node's webhook:
// the envs this node runs follow their branches; the forge hears from
// the node that got the webhook.
func (p *previews) syncRelayed() {
	p.relayed.Add(1)
	p.wg.Go(func() {
		defer p.relayed.Add(-1)
		p.fetch(nil)
	})
}

func (p *previews) fetch(after func()) {
	if err := p.git.Sync(p.ctx); err != nil {
		p.log.Warn().Err(err).Msg("fetch after a webhook failed")
	}
	if after != nil {
		after()
	}
}

// Pushed implements webhook.Events.
func (p *previews) Pushed(string, string) { p.sync(nil) }

// BranchDeleted implements webhook.Events: the fetch prunes the branch,
// and changed destroys its env.
func (p *previews) BranchDeleted(string) { p.sync(nil) }

// PullRequestUpdated implements webhook.Events: the pull request is
// recorded (in state_dir, so a restart keeps it), and told where its
// preview is once the fetch has the branch.
func (p *previews) PullRequestUpdated(pr webhook.PullRequest) {
	p.recordPR(pr.Number, pr.Branch, p.git.Label(pr.Branch))
	p.sync(func() {
		if env := p.git.Label(pr.Branch); env != "" {
			p.recordPR(pr.Number, pr.Branch, env)
			if p.preStart {
				p.start(env, pr.Number)
			}
			p.deployed(env)
		}
	})
}

// start starts env (previews.pre_start) unless it runs, and waits for it.
// A failure is logged: the env's first visitor sees it on the
// start-failure page, and the next push retries.
func (p *previews) start(env string, pr int) {
	if d, ok := p.envs.Detail(env); ok && d.State == lifecycle.Ready {
		return
	}
	l, err := p.envs.Acquire(p.ctx, env)
	if err != nil {
		p.log.Warn().Err(err).Str("env", env).Int("pr", pr).Msg("pre-start of a pull request's env failed")
		return
	}
	l.Release()
	p.log.Info().Str("env", env).Int("pr", pr).Msg("pull request's env pre-started")
}

func (p *previews) recordPR(number int, branch, env string) {
	if err := p.pulls.opened(number, branch, env); err != nil {
		p.log.Error().Err(err).Int("pr", number).Msg("record the pull request; a restart will not know it")
	}
}

// deploymentMade records a GitHub deployment of env for its pull request.
func (p *previews) deploymentMade(env string, id int64) {
	if err := p.pulls.deployed(env, id); err != nil {
		p.log.Error().Err(err).Str("env", env).Int64("deployment", id).Msg("record the deployment")
	}
}

// PullRequestClosed implements webhook.Events: the env goes even if the
// branch stays (a later request for it makes a fresh one); if the branch
// is gone, the env recorded for the pull request goes.
func (p *previews) PullRequestClosed(pr webhook.PullRequest) {
	rec, known, err := p.pulls.closed(pr.Number)
	if err != nil {
		p.log.Error().Err(err).Int("pr", pr.Number).Msg("forget the closed pull request")
	}
	env := p.git.Label(pr.Branch)
	if env == "" && known {
		env = rec.Env
	}
	if env == "" {
		return
	}
	deployments := slices.Concat(rec.Deployments, p.pulls.deploymentsOf(env))
	p.wg.Go(func() {
		p.destroy(env, fmt.Sprintf("pull request #%d closed", pr.Number), deployments)
		text := fmt.Sprintf("Preview of `%s` removed: the pull request was closed (%s).",
			pr.Branch, time.Now().UTC().Format(time.RFC3339))
		for _, f := range p.tell {
			f.Comment(pr.Number, text)
		}
	})
}

// ttlLoop destroys envs that had no request for ttl: those the manager
// knows by their last activity, others (not run since the gateway
// started) by their data dir's modification time.
func (p *previews) ttlLoop(ttl time.Duration) {
	every := min(max(ttl/4, 100*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	root := filepath.Join(p.cfg.StateDir, "envs")
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		ents, _ := os.ReadDir(root)
		now := time.Now()
		for _, de := range ents {
			name := de.Name()
			if !de.IsDir() || !envname.Valid(name) {
				continue
			}
			var last time.Time
			if d, ok := p.envs.Detail(name); ok {
				if d.InFlight > 0 {
					continue
				}
				last = d.LastActive
				if d.StartedAt.After(last) {
					last = d.StartedAt
				}
			}
			if fi, err := de.Info(); err == nil && fi.ModTime().After(last) && last.Unix() <= 0 {
				last = fi.ModTime()
			}
			if now.Sub(last) > ttl {
				p.destroy(name, fmt.Sprintf("no request for %s (destroy_after)", ttl), p.pulls.deploymentsOf(name))
			}
		}
	}
}
