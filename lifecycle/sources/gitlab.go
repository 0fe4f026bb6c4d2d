package sources

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// GitLab tells merge requests about their previews through GitLab's REST
// API: an environment preview/<env> whose external URL is the env's (the
// merge request's "View app" button), stopped when the env is destroyed,
// and one note per merge request. Like GitHub, calls run in the
// background, in order, retried with backoff, and never block the caller.
type GitLab struct {
	*notifier
	api, project, token string
	client              *http.Client
}

// NewGitLab starts a GitLab notifier for project ("group/name" or a
// numeric ID) at api (default https://gitlab.com/api/v4) with token.
// Close stops it.
func NewGitLab(api, project, token string, log zerolog.Logger) *GitLab {
	if api == "" {
		api = "https://gitlab.com/api/v4"
	}
	return &GitLab{notifier: newNotifier(log), api: strings.TrimSuffix(api, "/"),
		project: url.PathEscape(project), token: token, client: &http.Client{Timeout: 30 * time.Second}}
}

// call sends one API request; see GitHub.call.
func (g *GitLab) call(ctx context.Context, method, path string, in, out any) error {
	return callJSON(ctx, g.client, "gitlab", method, g.api+"/projects/"+g.project, path, in, out, func(h http.Header) {
		h.Set("PRIVATE-TOKEN", g.token)
	})
}

// environment returns the ID of env's environment, 0 if there is none.
func (g *GitLab) environment(ctx context.Context, env string) (int64, error) {
	var es []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	q := url.Values{"name": {Environment(env)}}
	if err := g.call(ctx, http.MethodGet, "/environments?"+q.Encode(), nil, &es); err != nil {
		return 0, err
	}
	for _, e := range es {
		if e.Name == Environment(env) {
			return e.ID, nil
		}
	}
	return 0, nil
}

// Deployed makes or updates env's environment with envURL. (GitLab
// deployments belong to CI jobs; the environment alone gives the merge
// request its link.)
func (g *GitLab) Deployed(env, _, envURL string) {
	g.enqueue("environment "+env, func(ctx context.Context) error {
		id, err := g.environment(ctx, env)
		if err != nil {
			return err
		}
		if id == 0 {
			return g.call(ctx, http.MethodPost, "/environments", map[string]string{"name": Environment(env), "external_url": envURL}, nil)
		}
		return g.call(ctx, http.MethodPut, fmt.Sprintf("/environments/%d", id), map[string]string{"external_url": envURL}, nil)
	})
}

// Destroyed stops env's environment; deployment IDs are GitHub's, not used here.
func (g *GitLab) Destroyed(env string, _ []int64) {
	g.enqueue("stop environment "+env, func(ctx context.Context) error {
		id, err := g.environment(ctx, env)
		if err != nil || id == 0 {
			return err
		}
		return g.call(ctx, http.MethodPost, fmt.Sprintf("/environments/%d/stop", id), nil, nil)
	})
}

// Comment makes or edits merge request iid's one envgate note.
func (g *GitLab) Comment(iid int, text string) {
	body := CommentMarker + "\n" + text
	g.enqueue(fmt.Sprintf("note !%d", iid), func(ctx context.Context) error {
		var ns []struct {
			ID   int64  `json:"id"`
			Body string `json:"body"`
		}
		if err := g.call(ctx, http.MethodGet, fmt.Sprintf("/merge_requests/%d/notes?per_page=100&sort=asc", iid), nil, &ns); err != nil {
			return err
		}
		for _, n := range ns {
			if strings.HasPrefix(n.Body, CommentMarker) {
				return g.call(ctx, http.MethodPut, fmt.Sprintf("/merge_requests/%d/notes/%d", iid, n.ID), map[string]string{"body": body}, nil)
			}
		}
		return g.call(ctx, http.MethodPost, fmt.Sprintf("/merge_requests/%d/notes", iid), map[string]string{"body": body}, nil)
	})
}
