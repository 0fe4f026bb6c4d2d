package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
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

// prNodeEnv, set in a child process of the test binary, makes
// TestPRMapNodeHelper one node of TestPRMapNodesLoseNoUpdate: the path of
// the shared file, the first pull request number it records, how many,
// and how many all nodes record together.
const prNodeEnv = "ENVGATE_TEST_PRMAP_NODE"

// recordPRs records pull requests first..first+n-1 in m, each with its
// env and a deployment, closing every fifth one again, as a node does
// for the webhooks it gets.
func recordPRs(m *prMap, first, n int) error {
	for i := first; i < first+n; i++ {
		env := fmt.Sprintf("pr-%d", i)
		if err := m.opened(i, "branch-"+env, env); err != nil {
			return err
		}
		if err := m.deployed(env, int64(i)*10); err != nil {
			return err
		}
		if i%5 == 0 {
			if _, known, err := m.closed(i); err != nil || !known {
				return fmt.Errorf("close %d: known %v, %v", i, known, err)
			}
		}
	}
	return nil
}

// checkPRs returns what m, a node's view, gets wrong of pull requests
// 1..total as the recordPRs of all nodes left them.
func checkPRs(m *prMap, total int) []string {
	var wrong []string
	for i := 1; i <= total; i++ {
		env := fmt.Sprintf("pr-%d", i)
		pr, ok := m.byBranch("branch-" + env)
		if i%5 == 0 {
			if ok {
				wrong = append(wrong, fmt.Sprintf("PR %d was closed, but is recorded: %+v", i, pr))
			}
			continue
		}
		if !ok || pr.Number != i || pr.Env != env || !slices.Equal(pr.Deployments, []int64{int64(i) * 10}) {
			wrong = append(wrong, fmt.Sprintf("PR %d: %+v (recorded %v); want it with env %s and deployment %d", i, pr, ok, env, i*10))
		}
		if ids := m.deploymentsOf(env); !slices.Equal(ids, []int64{int64(i) * 10}) {
			wrong = append(wrong, fmt.Sprintf("deployments %v for %s, want [%d]", ids, env, i*10))
		}
	}
	return wrong
}

// TestPRMapNodeHelper is the other node of TestPRMapNodesLoseNoUpdate,
// in a process of its own; run directly, it does nothing. Once it has
// recorded its pull requests it says so on stdout, and when its stdin
// closes (every node is done) it checks its own view of them all.
func TestPRMapNodeHelper(t *testing.T) {
	spec := os.Getenv(prNodeEnv)
	if spec == "" {
		t.Skip("a helper process of TestPRMapNodesLoseNoUpdate")
	}
	var path string
	var first, n, total int
	if _, err := fmt.Sscanf(spec, "%s %d %d %d", &path, &first, &n, &total); err != nil {
		t.Fatal(err)
	}
	m, err := loadPRMap(path, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := recordPRs(m, first, n); err != nil {
		t.Fatal(err)
	}
	fmt.Println(prNodeRecorded)
	io.Copy(io.Discard, os.Stdin)
	for _, w := range checkPRs(m, total) {
		t.Error("the other node's view: " + w)
	}
}

// prNodeRecorded is the line TestPRMapNodeHelper writes once it has
// recorded its pull requests.
const prNodeRecorded = "recorded"

// TestPRMapNodesLoseNoUpdate (issue 16): the nodes of a cluster share
// state_dir, and so previews-prs.json. Two nodes (this process and a
// child) and, in this one, two goroutines record pull requests,
// deployments and closes at the same time: every change of each is in
// the file afterwards, and each node's view (this one's, the child's,
// and a node's that starts then) holds the others' records.
func TestPRMapNodesLoseNoUpdate(t *testing.T) {
	path := filepath.Join(t.TempDir(), prsFile)
	const n = 60
	node, err := loadPRMap(path, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	other := exec.Command(os.Args[0], "-test.run=^TestPRMapNodeHelper$", "-test.count=1", "-test.v")
	other.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d", prNodeEnv, path, 1, n, 3*n))
	stdin, err := other.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := other.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	other.Stderr = &stderr
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		other.Process.Kill()
		other.Wait()
	})
	// The child's stdout: its line once it has recorded (recorded), then
	// its test output (out, once done is closed).
	recorded := make(chan bool, 1)
	done := make(chan struct{})
	var out strings.Builder
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			if sc.Text() == prNodeRecorded && !said {
				said = true
				recorded <- true
				continue
			}
			out.WriteString(sc.Text() + "\n")
		}
		if !said {
			recorded <- false
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, first := range []int{1 + n, 1 + 2*n} {
		wg.Go(func() { errs <- recordPRs(node, first, n) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if !<-recorded {
		<-done
		err := other.Wait()
		t.Fatalf("the other node ended (%v) before it recorded its pull requests:\n%s%s", err, out.String(), stderr.String())
	}
	// Every node is done: the other checks its view, this one its own
	// and that of a node that has just started (none keeps a copy).
	stdin.Close()
	<-done
	if err := other.Wait(); err != nil {
		t.Errorf("the other node: %v\n%s%s", err, out.String(), stderr.String())
	}
	later, err := loadPRMap(path, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range checkPRs(node, 3*n) {
		t.Error("this node's view: " + w)
	}
	for _, w := range checkPRs(later, 3*n) {
		t.Error("a new node's view: " + w)
	}
}
