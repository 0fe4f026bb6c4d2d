package sources

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// CommentMarker starts the one comment envgate keeps on a pull request;
// it is how the comment is found again to be edited.
const CommentMarker = "<!-- envgate-preview -->"

// GitHub tells pull requests about their previews through GitHub's REST
// API: deployments with statuses (the "View deployment" button) and one
// comment per pull request. Calls run on its own goroutine, in order,
// each retried with backoff: they never block the caller, and a failure
// is logged, never returned.
type GitHub struct {
	*notifier
	api, repo, token string
	client           *http.Client
	// OnDeployment, if set (before the first Deployed), is told of each
	// deployment made, on the notifier's goroutine: the caller may keep
	// the IDs, to have them marked inactive by Destroyed after a restart.
	OnDeployment func(env string, id int64)
}

// notifier runs API calls on a goroutine of its own, in order, each
// retried with backoff; Close drops those not yet done.
type notifier struct {
	log       zerolog.Logger
	firstWait time.Duration // the first retry's wait; doubles up to ghMaxBackoff

	queue chan ghTask
	stop  context.CancelFunc
	done  chan struct{}
	once  sync.Once
}

type ghTask struct {
	what string
	do   func(ctx context.Context) error
}

func newNotifier(log zerolog.Logger) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	n := &notifier{log: log, firstWait: time.Second, queue: make(chan ghTask, ghQueue), stop: cancel, done: make(chan struct{})}
	go n.run(ctx)
	return n
}

// ghAttempts bounds the tries of one task; ghMaxBackoff the wait between.
const (
	ghAttempts   = 6
	ghMaxBackoff = 30 * time.Second
	ghQueue      = 256
)

// NewGitHub starts a GitHub notifier for repo ("owner/name") at api
// (default https://api.github.com) with token. Close stops it.
func NewGitHub(api, repo, token string, log zerolog.Logger) *GitHub {
	if api == "" {
		api = "https://api.github.com"
	}
	return &GitHub{notifier: newNotifier(log), api: strings.TrimSuffix(api, "/"), repo: repo, token: token,
		client: &http.Client{Timeout: 30 * time.Second}}
}

// Close drops the tasks not yet done and waits for the one running.
func (g *notifier) Close() {
	g.once.Do(func() {
		g.stop()
		<-g.done
	})
}

func (g *notifier) enqueue(what string, do func(ctx context.Context) error) {
	select {
	case g.queue <- ghTask{what, do}:
	default:
		g.log.Warn().Str("task", what).Msg("queue full; dropping the update")
	}
}

func (g *notifier) run(ctx context.Context) {
	defer close(g.done)
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-g.queue:
			g.attempt(ctx, t)
		}
	}
}

// attempt runs t until it succeeds, ghAttempts fail, or ctx ends.
func (g *notifier) attempt(ctx context.Context, t ghTask) {
	wait := g.firstWait
	for i := 1; ; i++ {
		err := t.do(ctx)
		if err == nil {
			return
		}
		if i == ghAttempts || ctx.Err() != nil {
			g.log.Error().Err(err).Str("task", t.what).Int("attempts", i).Msg("API calls failed; giving up")
			return
		}
		g.log.Warn().Err(err).Str("task", t.what).Dur("retry_in", wait).Msg("API call failed; retrying")
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		wait = min(wait*2, ghMaxBackoff)
	}
}

// call sends one API request and decodes a JSON answer into out (if not
// nil). Any status but 2xx is an error.
func (g *GitHub) call(ctx context.Context, method, path string, in, out any) error {
	return callJSON(ctx, g.client, "github", method, g.api, path, in, out, func(h http.Header) {
		h.Set("Accept", "application/vnd.github+json")
		h.Set("X-GitHub-Api-Version", "2022-11-28")
		h.Set("Authorization", "Bearer "+g.token)
	})
}

// callJSON sends one request to base+path of a forge's REST API, with in
// (if not nil) as its JSON body and the headers auth sets, and decodes a
// JSON answer into out (if not nil). Any status but 2xx is an error that
// names forge, method and path and quotes the start of the answer.
func callJSON(ctx context.Context, client *http.Client, forge, method, base, path string, in, out any, auth func(http.Header)) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	auth(req.Header)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", forge, method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s %s: %s: %.200s", forge, method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s: %s %s: %w", forge, method, path, err)
		}
	}
	return nil
}

// Environment is the GitHub environment of env's previews.
func Environment(env string) string { return "preview/" + env }

// Deployed records that env serves commit at envURL: a deployment of the
// commit with a success status carrying the URL.
func (g *GitHub) Deployed(env, commit, envURL string) {
	var id int64 // kept across retries: a retry does not make a second deployment
	g.enqueue("deploy "+env, func(ctx context.Context) error {
		if id == 0 {
			var d struct {
				ID int64 `json:"id"`
			}
			err := g.call(ctx, http.MethodPost, "/repos/"+g.repo+"/deployments", map[string]any{
				"ref": commit, "environment": Environment(env), "auto_merge": false,
				"required_contexts": []string{}, "transient_environment": true,
				"description": "envgate preview",
			}, &d)
			if err != nil {
				return err
			}
			id = d.ID
			if g.OnDeployment != nil {
				g.OnDeployment(env, id)
			}
		}
		return g.call(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/deployments/%d/statuses", g.repo, id), map[string]any{
			"state": "success", "environment_url": envURL, "auto_inactive": true,
		}, nil)
	})
}

// Destroyed marks env's deployments inactive: those GitHub lists for its
// environment (the newest page) and those in known (recorded from
// OnDeployment), each once.
func (g *GitHub) Destroyed(env string, known []int64) {
	known = slices.Clone(known)
	g.enqueue("inactive "+env, func(ctx context.Context) error {
		var ds []struct {
			ID int64 `json:"id"`
		}
		q := url.Values{"environment": {Environment(env)}}
		if err := g.call(ctx, http.MethodGet, "/repos/"+g.repo+"/deployments?"+q.Encode(), nil, &ds); err != nil {
			return err
		}
		ids := known
		for _, d := range ds {
			if !slices.Contains(ids, d.ID) {
				ids = append(ids, d.ID)
			}
		}
		for _, id := range ids {
			if err := g.call(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/deployments/%d/statuses", g.repo, id),
				map[string]any{"state": "inactive"}, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// Comment makes or edits pull request pr's one envgate comment to say
// text (the marker is added).
func (g *GitHub) Comment(pr int, text string) {
	body := CommentMarker + "\n" + text
	g.enqueue(fmt.Sprintf("comment #%d", pr), func(ctx context.Context) error {
		var cs []struct {
			ID   int64  `json:"id"`
			Body string `json:"body"`
		}
		// One page of 100: the marker comment is among a PR's first.
		if err := g.call(ctx, http.MethodGet, fmt.Sprintf("/repos/%s/issues/%d/comments?per_page=100", g.repo, pr), nil, &cs); err != nil {
			return err
		}
		for _, c := range cs {
			if strings.HasPrefix(c.Body, CommentMarker) {
				return g.call(ctx, http.MethodPatch, fmt.Sprintf("/repos/%s/issues/comments/%d", g.repo, c.ID), map[string]string{"body": body}, nil)
			}
		}
		return g.call(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/issues/%d/comments", g.repo, pr), map[string]string{"body": body}, nil)
	})
}
