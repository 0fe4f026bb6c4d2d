package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
)

// TestPreviewPreStart (issue 14, previews.pre_start): a pull request
// opened webhook starts the branch's env with no request for it, and the
// pull request is told of its preview; an env whose branch has no pull
// request stays stopped.
func TestPreviewPreStart(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	fake, api := newFakeGitHub(t)
	secretFile, tokenFile := previewSecrets(t, "hook-secret", "gh-token")
	_, cfg, addr, _ := previewInstance(t, previewTemplate, repo, "1h", fmt.Sprintf(`previews:
  pre_start: true
  github: {secret_file: %s, token_file: %s, repo: acme/app, api: %s}
`, secretFile, tokenFile, api.URL))
	g := startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	if envs := lsJSON(t, cfg); len(envs) != 0 {
		t.Fatalf("envs before any request or webhook: %v", envs)
	}

	if code := deliver(t, g, "hook-secret", "pull_request", "p-open", map[string]any{"action": "opened",
		"pull_request": map[string]any{"number": 9, "head": map[string]string{"ref": "feature/Login_Page", "sha": "x"}}}); code != 202 {
		t.Fatalf("pull_request opened: status %d", code)
	}
	wait.For(t, time.Minute, "feature-login-page ready with no request for it", func() bool {
		return lsJSON(t, cfg)["feature-login-page"].State == "ready"
	})
	envs := lsJSON(t, cfg)
	if _, ok := envs["main"]; ok {
		t.Errorf("main started too; only the pull request's env is pre-started: %v", envs)
	}
	wait.For(t, time.Minute, "the PR told of its preview", func() bool {
		return fake.has("POST /repos/acme/app/issues/9/comments", "feature-login-page.localhost")
	})
	if !strings.Contains(g.log.String(), "pull request's env pre-started") {
		t.Errorf("no pre-start logged")
	}
	if code, body, _ := g.get(t, "feature-login-page.localhost", "/"); code != 200 || !strings.Contains(body, "login-v1") {
		t.Errorf("feature-login-page after the pre-start: %d %q", code, body)
	}
}
