package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
)

// TestPreviewPRMapSurvivesRestart (issue 14): the pull requests previews
// know (number, branch, env, deployment IDs) are kept in
// state_dir/previews-prs.json, and the delivery IDs seen in
// state_dir/webhook-deliveries, so after a gateway restart a replay is
// still refused, a push still
// edits the PR's comment, and the PR's close, after its branch was
// deleted while the gateway was down, still destroys its env and marks
// the deployments recorded before the restart inactive.
func TestPreviewPRMapSurvivesRestart(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	fake, api := newFakeGitHub(t)
	secretFile, tokenFile := previewSecrets(t, "hook-secret", "gh-token")
	_, cfg, addr, state := previewInstance(t, previewTemplate, repo, "1h", fmt.Sprintf(`previews:
  github: {secret_file: %s, token_file: %s, repo: acme/app, api: %s}
`, secretFile, tokenFile, api.URL))
	prsPath := filepath.Join(state, prsFile)
	type record struct {
		PullRequests []pullRequest `json:"pull_requests"`
	}
	read := func() record {
		var r record
		if b, err := os.ReadFile(prsPath); err == nil {
			json.Unmarshal(b, &r)
		}
		return r
	}

	g := startServe(t, cfg, addr)
	if code, body, _ := g.get(t, "feature-login-page.localhost", "/"); code != 200 || !strings.Contains(body, "login-v1") {
		t.Fatalf("feature-login-page: %d %q", code, body)
	}
	if code := deliver(t, g, "hook-secret", "pull_request", "m-open", map[string]any{"action": "opened",
		"pull_request": map[string]any{"number": 7, "head": map[string]string{"ref": "feature/Login_Page", "sha": "x"}}}); code != 202 {
		t.Fatalf("pull_request opened: status %d", code)
	}
	var before record
	wait.For(t, time.Minute, "PR 7 with its env and deployment recorded in "+prsPath, func() bool {
		before = read()
		return len(before.PullRequests) == 1 && before.PullRequests[0].Number == 7 &&
			before.PullRequests[0].Branch == "feature/Login_Page" && before.PullRequests[0].Env == "feature-login-page" &&
			len(before.PullRequests[0].Deployments) > 0
	})
	if fi, err := os.Stat(prsPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600", prsPath, err, fi.Mode().Perm())
	}
	deployedBefore := before.PullRequests[0].Deployments
	g.stop(t, syscall.SIGTERM)

	g = startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	// The delivery IDs seen survive the restart too.
	if code := deliver(t, g, "hook-secret", "pull_request", "m-open", map[string]any{"action": "opened",
		"pull_request": map[string]any{"number": 7, "head": map[string]string{"ref": "feature/Login_Page", "sha": "x"}}}); code != 409 {
		t.Errorf("a delivery replayed after the restart: status %d, want 409", code)
	}
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v2\n"})
	head := repo.git("rev-parse", "feature/Login_Page")
	if code := deliver(t, g, "hook-secret", "push", "m-push", map[string]any{"ref": "refs/heads/feature/Login_Page", "after": head}); code != 202 {
		t.Fatalf("push: status %d", code)
	}
	wait.For(t, time.Minute, "the PR's comment edited with the new commit after the restart", func() bool {
		return fake.has("PATCH /repos/acme/app/issues/comments/", head[:12])
	})

	// The branch goes while the gateway is down; the close comes after.
	g.stop(t, syscall.SIGTERM)
	repo.git("checkout", "--quiet", "main")
	repo.git("branch", "--quiet", "-D", "feature/Login_Page")
	g = startServe(t, cfg, addr)
	if code := deliver(t, g, "hook-secret", "pull_request", "m-close", map[string]any{"action": "closed",
		"pull_request": map[string]any{"number": 7, "head": map[string]string{"ref": "feature/Login_Page", "sha": head}}}); code != 202 {
		t.Fatalf("pull_request closed: status %d", code)
	}
	wait.For(t, time.Minute, "the env's data dir removed on the close", func() bool {
		_, err := os.Stat(filepath.Join(state, "envs", "feature-login-page"))
		return os.IsNotExist(err)
	})
	for _, id := range deployedBefore {
		wait.For(t, time.Minute, fmt.Sprintf("deployment %d (recorded before the restarts) marked inactive", id), func() bool {
			return fake.has(fmt.Sprintf("POST /repos/acme/app/deployments/%d/statuses", id), `"state":"inactive"`)
		})
	}
	wait.For(t, time.Minute, "PR 7 gone from "+prsPath, func() bool {
		return !slices.ContainsFunc(read().PullRequests, func(p pullRequest) bool { return p.Number == 7 })
	})
}
