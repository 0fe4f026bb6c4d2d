package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
)

// heldPreviewTemplate is previewTemplate whose prepare step, in a checkout
// holding a HOLD file, waits until the test writes "release" into the
// env's data dir: the test sees the env while it prepares.
const heldPreviewTemplate = `source: {kind: git, repo: %[1]s, checkouts: true, refresh: %[2]s}
templates:
  - name: preview
    dir: "{{.Checkout}}"
    prepare:
      - ["sh", "-c", "if [ -f HOLD ]; then echo held; while [ ! -f \"$ENVGATE_DATA_DIR/release\" ]; do sleep 0.05; done; fi; tr -d '\\n' < VERSION > built.txt"]
    command: ["sh", "-c", "exec \"$0\" demo-server --listen :{{.Port}} --name \"$(cat built.txt)\"", "%[3]s"]
    port: 3000
    ready: {http: /healthz, timeout: 30s}
`

// TestPreviewNextRequest (issue 14, on_push: next-request): a signed push
// marks the running env stale and restarts nothing; a download in flight
// and a request made meanwhile are served whole by the old server; the
// next request once nothing is in flight restarts the env on the new
// commit, and a browser meanwhile sees the waiting page say "Updating to
// <commit>" while the prepare step runs; the data dir survives.
func TestPreviewNextRequest(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	secretFile, _ := previewSecrets(t, "hook-secret", "unused")
	_, cfg, addr, state := previewInstance(t, heldPreviewTemplate, repo, "1h", fmt.Sprintf("previews:\n  on_push: next-request\n  github: {secret_file: %s}\n", secretFile))
	data := filepath.Join(state, "envs", "feature-login-page")
	g := startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	const host = "feature-login-page.localhost"

	if code, body, _ := g.get(t, host, "/"); code != 200 || !strings.Contains(body, "login-v1") {
		t.Fatalf("before the push: %d %q", code, body)
	}
	keep := filepath.Join(data, "kept.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	resp, err := g.client().Get("http://" + host + "/download?bytes=" + fmt.Sprint(size))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %v %v", resp, err)
	}
	defer resp.Body.Close()
	first := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}

	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v2\n", "HOLD": "x\n"})
	head := repo.git("rev-parse", "feature/Login_Page")
	push := map[string]any{"ref": "refs/heads/feature/Login_Page", "after": head}
	if code := deliver(t, g, "hook-secret", "push", "nr-push", push); code != 202 {
		t.Fatalf("signed push: status %d, want 202", code)
	}
	wait.For(t, time.Minute, "the fetch after the push (git branches changed)", func() bool {
		return strings.Contains(g.log.String(), "git branches changed")
	})
	// Stale, but busy: this request, like the download, is the old
	// server's.
	if code, body, _ := g.get(t, host, "/"); code != 200 || !strings.Contains(body, "login-v1") {
		t.Errorf("a request while the download is in flight: %d %q, want login-v1 from the old server", code, body)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n+int64(len(first)) != size {
		t.Errorf("download in flight across the push: %d bytes, %v; want all %d", n+int64(len(first)), err, size)
	}
	resp.Body.Close()
	// Nothing restarts it by itself (on_push: restart would, within 50ms
	// of the drain): it waits for its next request.
	if wait.Until(1500*time.Millisecond, func() bool { return strings.Contains(g.log.String(), "its branch moved") }) {
		t.Fatalf("the env was stopped before its next request:\n%s", g.log.String())
	}

	// The next request restarts the env; its prepare step holds, and a
	// browser sees the waiting page say which commit it is updating to.
	var page string
	wait.For(t, time.Minute, "the waiting page saying it updates to the new commit", func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/", nil)
		req.Header.Set("Accept", "text/html")
		r, err := g.client().Do(req)
		if err != nil {
			t.Fatalf("navigation: %v", err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		page = string(b)
		if r.StatusCode == 200 && strings.Contains(page, "login-v2") {
			t.Fatalf("login-v2 served while its prepare step is held")
		}
		return r.StatusCode == http.StatusServiceUnavailable && strings.Contains(page, `Updating to <code id="commit">`+head[:7]+`</code>`)
	})
	if !strings.Contains(g.log.String(), "its branch moved (on_push: next-request)") {
		t.Errorf("the restart was not the stale env's at its next request")
	}
	if strings.Contains(page, "hidden>Updating") {
		t.Errorf("the updating line is hidden on the waiting page:\n%s", page)
	}
	if code, body, _ := g.get(t, host, "/_envgate/status"); code != 200 || !strings.Contains(body, `"updating":"`+head[:7]+`"`) {
		t.Errorf("status while the prepare step is held: %d %s, want updating %s", code, body, head[:7])
	}
	if err := os.WriteFile(filepath.Join(data, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "login-v2 served after the restart", func() bool {
		code, body, _ := g.get(t, host, "/")
		return code == 200 && strings.Contains(body, "login-v2")
	})
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("data dir not kept across the restart: %v", err)
	}
}
