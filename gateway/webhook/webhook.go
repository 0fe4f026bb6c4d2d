// Package webhook receives GitHub and GitLab webhooks for pull-request
// previews: it authenticates each delivery (GitHub's HMAC signature,
// GitLab's token), refuses oversized bodies and replayed deliveries, and
// turns the events it knows into calls on an Events value. It owns no
// git, env or API state; it never acts on a delivery it could not
// authenticate.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/rs/zerolog"
)

// Paths the handler serves.
const (
	GitHubPath = "/_envgate/webhooks/github"
	GitLabPath = "/_envgate/webhooks/gitlab"
)

// MaxBody is the largest delivery accepted: GitHub caps payloads at
// 25 MB, but pushes of that size are nothing a preview needs.
const MaxBody = 10 << 20

// replayMemory is how many delivery IDs are remembered.
const replayMemory = 4096

// PullRequest is what events say about a pull (merge) request.
type PullRequest struct {
	Number int    // PR number, or MR iid
	Branch string // head (source) branch
	Head   string // head commit
}

// Events receives authenticated events. Calls are made on the request's
// goroutine: implementations return quickly and do slow work elsewhere.
type Events interface {
	// Pushed: branch moved to commit (a new branch too).
	Pushed(branch, commit string)
	// BranchDeleted: branch is gone.
	BranchDeleted(branch string)
	// PullRequestUpdated: opened, reopened or synchronized.
	PullRequestUpdated(pr PullRequest)
	// PullRequestClosed: closed or merged.
	PullRequestClosed(pr PullRequest)
}

// Config configures New. A provider with no secret is not served (404).
type Config struct {
	// GitHubSecret is the webhook secret GitHub signs deliveries with.
	GitHubSecret []byte
	// GitLabToken is the secret token GitLab sends in X-Gitlab-Token.
	GitLabToken []byte
	Events      Events
	// SeenFile, if set, keeps the delivery IDs accepted (the newest
	// 4,096) in a file that every Handler given it shares, so that a
	// delivery replayed to a new gateway process, or to another node of a
	// cluster (whose state_dir is shared), is refused too; it is read at
	// each delivery and changed under an flock of SeenFile.lock. Default
	// "": memory only.
	SeenFile string
	Log      zerolog.Logger
}

// Handler serves GitHubPath and GitLabPath.
type Handler struct {
	cfg  Config
	seen *idSet
}

// New returns a Handler.
func New(cfg Config) *Handler {
	return &Handler{cfg: cfg, seen: newIDSet(replayMemory, cfg.SeenFile, cfg.Log)}
}

// ServeHTTP answers a delivery: 202 when acted on or ignored (an event
// kind previews do not use), 401 for a bad or missing signature or token,
// 409 for a replayed delivery (one accepted before by any Handler
// sharing its SeenFile), 413 for a body over MaxBody, 400 for a
// body that is not the event's JSON.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var github bool
	switch r.URL.Path {
	case GitHubPath:
		github = true
		if len(h.cfg.GitHubSecret) == 0 {
			http.NotFound(w, r)
			return
		}
	case GitLabPath:
		if len(h.cfg.GitLabToken) == 0 {
			http.NotFound(w, r)
			return
		}
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	var id string
	if github {
		if !validSignature(h.cfg.GitHubSecret, body, r.Header.Get("X-Hub-Signature-256")) {
			h.cfg.Log.Warn().Str("remote", r.RemoteAddr).Msg("github webhook: bad or missing signature")
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		id = "github:" + r.Header.Get("X-GitHub-Delivery")
	} else {
		if subtle.ConstantTimeCompare(h.cfg.GitLabToken, []byte(r.Header.Get("X-Gitlab-Token"))) != 1 {
			h.cfg.Log.Warn().Str("remote", r.RemoteAddr).Msg("gitlab webhook: bad or missing token")
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		id = "gitlab:" + r.Header.Get("X-Gitlab-Event-UUID")
	}
	if strings.HasSuffix(id, ":") {
		http.Error(w, "missing delivery ID", http.StatusBadRequest)
		return
	}
	// Parsed before the ID is recorded: a delivery refused for its body
	// is not remembered, so a fixed redelivery is taken.
	var act func()
	if github {
		act, err = h.github(r.Header.Get("X-GitHub-Event"), body)
	} else {
		act, err = h.gitlab(r.Header.Get("X-Gitlab-Event"), body)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !h.seen.add(id) {
		h.cfg.Log.Warn().Str("delivery", id).Msg("webhook: replayed delivery refused")
		http.Error(w, "delivery already received", http.StatusConflict)
		return
	}
	if act != nil {
		act()
	}
	w.WriteHeader(http.StatusAccepted)
}

// validSignature checks GitHub's "sha256=<hex>" HMAC of body in constant
// time.
func validSignature(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
}

// Sign returns the X-Hub-Signature-256 value of body: for tests and
// tools that send deliveries.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

const zeroSHA = "0000000000000000000000000000000000000000"

// github parses a GitHub delivery of event into the call on Events it
// asks for: nil for an event previews ignore.
func (h *Handler) github(event string, body []byte) (act func(), err error) {
	switch event {
	case "push":
		var p struct {
			Ref     string `json:"ref"`
			After   string `json:"after"`
			Deleted bool   `json:"deleted"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, errors.New("push: not JSON")
		}
		branch, ok := strings.CutPrefix(p.Ref, "refs/heads/")
		switch {
		case !ok: // a tag
		case p.Deleted || p.After == zeroSHA:
			return func() { h.cfg.Events.BranchDeleted(branch) }, nil
		default:
			return func() { h.cfg.Events.Pushed(branch, p.After) }, nil
		}
	case "pull_request":
		var p struct {
			Action      string `json:"action"`
			PullRequest struct {
				Number int `json:"number"`
				Head   struct {
					Ref string `json:"ref"`
					SHA string `json:"sha"`
				} `json:"head"`
			} `json:"pull_request"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, errors.New("pull_request: not JSON")
		}
		pr := PullRequest{Number: p.PullRequest.Number, Branch: p.PullRequest.Head.Ref, Head: p.PullRequest.Head.SHA}
		switch p.Action {
		case "opened", "reopened", "synchronize":
			return func() { h.cfg.Events.PullRequestUpdated(pr) }, nil
		case "closed":
			return func() { h.cfg.Events.PullRequestClosed(pr) }, nil
		}
	}
	return nil, nil // ping and other events: nothing to do
}

// gitlab is github for GitLab.
func (h *Handler) gitlab(event string, body []byte) (act func(), err error) {
	switch event {
	case "Push Hook":
		var p struct {
			Ref   string `json:"ref"`
			After string `json:"after"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, errors.New("push: not JSON")
		}
		branch, ok := strings.CutPrefix(p.Ref, "refs/heads/")
		switch {
		case !ok:
		case p.After == zeroSHA:
			return func() { h.cfg.Events.BranchDeleted(branch) }, nil
		default:
			return func() { h.cfg.Events.Pushed(branch, p.After) }, nil
		}
	case "Merge Request Hook":
		var p struct {
			Attrs struct {
				IID          int    `json:"iid"`
				Action       string `json:"action"`
				SourceBranch string `json:"source_branch"`
				LastCommit   struct {
					ID string `json:"id"`
				} `json:"last_commit"`
			} `json:"object_attributes"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, errors.New("merge request: not JSON")
		}
		a := p.Attrs
		pr := PullRequest{Number: a.IID, Branch: a.SourceBranch, Head: a.LastCommit.ID}
		switch a.Action {
		case "open", "reopen", "update":
			return func() { h.cfg.Events.PullRequestUpdated(pr) }, nil
		case "close", "merge":
			return func() { h.cfg.Events.PullRequestClosed(pr) }, nil
		}
	}
	return nil, nil
}
