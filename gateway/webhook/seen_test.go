package webhook

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// TestReplayRefusedAfterRestart: with SeenFile, a delivery accepted by
// one Handler is refused as a replay by the next one (a restarted
// gateway); one refused for bad JSON is not remembered; the file is 0600.
func TestReplayRefusedAfterRestart(t *testing.T) {
	secret := []byte("s3cret")
	file := filepath.Join(t.TempDir(), "state", "seen")
	push := []byte(`{"ref":"refs/heads/x","after":"abc123"}`)
	gh := func(h *Handler, id string, body []byte) int {
		return post(h, GitHubPath, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": id, "X-Hub-Signature-256": Sign(secret, body)}, body)
	}
	rec := &recorder{}
	first := New(Config{GitHubSecret: secret, Events: rec, SeenFile: file})
	if code := gh(first, "d1", push); code != 202 {
		t.Fatalf("first delivery: %d", code)
	}
	if code := gh(first, "bad", []byte(`{`)); code != 400 {
		t.Fatalf("bad JSON: %d", code)
	}
	second := New(Config{GitHubSecret: secret, Events: rec, SeenFile: file})
	if code := gh(second, "d1", push); code != 409 {
		t.Errorf("d1 replayed to a restarted handler: %d, want 409", code)
	}
	if code := gh(second, "bad", push); code != 202 {
		t.Errorf("a redelivery of the one refused for bad JSON: %d, want 202", code)
	}
	if code := gh(second, "d2", push); code != 202 {
		t.Errorf("a new delivery after the restart: %d, want 202", code)
	}
	if len(rec.events) != 3 {
		t.Errorf("events %q, want three pushes (d1, bad's redelivery, d2)", rec.events)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600", file, err, fi.Mode().Perm())
	}
}

// TestSeenFileBounded: the file holds the newest IDs and never more
// than the set's size; a set made later knows the newest and has
// forgotten the oldest.
func TestSeenFileBounded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "seen")
	s := newIDSet(3, file, zerolog.Nop())
	for i := range 20 {
		id := fmt.Sprintf("github:%d", i)
		if !s.add(id) {
			t.Fatalf("%s not new", id)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n > 3 {
			t.Fatalf("after %d deliveries the file holds %d lines, want at most 3", i+1, n)
		}
	}
	again := newIDSet(3, file, zerolog.Nop())
	// The known ones first: adding an unknown one evicts the oldest.
	for _, c := range []struct {
		i    int
		want bool
	}{{19, false}, {18, false}, {17, false}, {16, true}, {0, true}} {
		if got := again.add(fmt.Sprintf("github:%d", c.i)); got != c.want {
			t.Errorf("after reload, add(%d) = %v, want %v", c.i, got, c.want)
		}
	}
}

// TestReplayToAnotherNodeRefused (issue 16): two Handlers that share a
// SeenFile from the start (two nodes of a cluster, one state_dir): a
// delivery accepted by either is refused by the other, and acted on once.
func TestReplayToAnotherNodeRefused(t *testing.T) {
	secret := []byte("s3cret")
	file := filepath.Join(t.TempDir(), "webhook-deliveries")
	recA, recB := &recorder{}, &recorder{}
	a := New(Config{GitHubSecret: secret, Events: recA, SeenFile: file})
	b := New(Config{GitHubSecret: secret, Events: recB, SeenFile: file})
	for _, c := range []struct {
		node       *Handler
		name, id   string
		want       int
		ref, after string
	}{
		{a, "A", "d1", 202, "refs/heads/x", "c1"},
		{b, "B", "d1", 409, "refs/heads/x", "c1"},
		{b, "B", "d2", 202, "refs/heads/y", "c2"},
		{a, "A", "d2", 409, "refs/heads/y", "c2"},
		{a, "A", "d1", 409, "refs/heads/x", "c1"},
	} {
		body := fmt.Appendf(nil, `{"ref":%q,"after":%q}`, c.ref, c.after)
		hdr := map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": c.id, "X-Hub-Signature-256": Sign(secret, body)}
		if code := post(c.node, GitHubPath, hdr, body); code != c.want {
			t.Errorf("%s to node %s: %d, want %d", c.id, c.name, code, c.want)
		}
	}
	if got := strings.Join(recA.events, "; ") + " | " + strings.Join(recB.events, "; "); got != "push x c1 | push y c2" {
		t.Errorf("events (A | B): %s; want each push acted on once, by the node it reached first", got)
	}
}

// seenNodeEnv, set in a child process of the test binary, makes
// TestSeenNodeHelper one node of TestSeenNodesLoseNoDelivery: the shared
// file, the node's name and the file it writes its result to.
const seenNodeEnv = "ENVGATE_TEST_SEEN_NODE"

// seenShared and seenOwn are how many deliveries each node of
// TestSeenNodesLoseNoDelivery gets: the same seenShared ones (one replay
// stream reaching every node), and seenOwn of its own.
const seenShared, seenOwn = 60, 60

// deliverAll delivers, to a Handler on file, the shared deliveries and
// node's own, interleaved, and returns the IDs it accepted (202); any
// other answer than 202 or 409 is an error.
func deliverAll(file, node string) ([]string, error) {
	secret := []byte("s3cret")
	h := New(Config{GitHubSecret: secret, Events: &recorder{}, SeenFile: file})
	body := []byte(`{}`)
	var accepted []string
	for i := range max(seenShared, seenOwn) {
		for _, id := range []string{fmt.Sprintf("shared-%d", i), fmt.Sprintf("%s-%d", node, i)} {
			hdr := map[string]string{"X-GitHub-Event": "ping", "X-GitHub-Delivery": id, "X-Hub-Signature-256": Sign(secret, body)}
			switch code := post(h, GitHubPath, hdr, body); code {
			case 202:
				accepted = append(accepted, "github:"+id)
			case 409:
			default:
				return nil, fmt.Errorf("node %s, delivery %s: status %d", node, id, code)
			}
		}
	}
	return accepted, nil
}

// TestSeenNodeHelper is a node of TestSeenNodesLoseNoDelivery in a
// process of its own; run directly, it does nothing.
func TestSeenNodeHelper(t *testing.T) {
	spec := os.Getenv(seenNodeEnv)
	if spec == "" {
		t.Skip("a helper process of TestSeenNodesLoseNoDelivery")
	}
	var file, node, out string
	if _, err := fmt.Sscanf(spec, "%s %s %s", &file, &node, &out); err != nil {
		t.Fatal(err)
	}
	accepted, err := deliverAll(file, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(strings.Join(accepted, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSeenNodesLoseNoDelivery (issue 16): three nodes on one SeenFile
// (a child process of the test binary, and two Handlers in this one)
// get, at the same time, the same stream of deliveries and some of their
// own. Each delivery is accepted by exactly one node, and afterwards the
// file holds every one of them: no node lost another's records, so a
// gateway started later refuses them all.
func TestSeenNodesLoseNoDelivery(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "webhook-deliveries")
	childOut := filepath.Join(dir, "child-accepted")
	child := exec.Command(os.Args[0], "-test.run=^TestSeenNodeHelper$", "-test.count=1")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", seenNodeEnv, file, "c", childOut))
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([][]string, 2)
	errs := make([]error, 2)
	for i, node := range []string{"a", "b"} {
		wg.Go(func() { results[i], errs[i] = deliverAll(file, node) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("the child node: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(childOut)
	if err != nil {
		t.Fatal(err)
	}
	results = append(results, strings.Fields(string(b)))
	acceptedBy := map[string][]string{}
	for i, node := range []string{"a", "b", "c"} {
		for _, id := range results[i] {
			acceptedBy[id] = append(acceptedBy[id], node)
		}
	}
	var want []string
	for i := range seenShared {
		want = append(want, fmt.Sprintf("github:shared-%d", i))
	}
	for _, node := range []string{"a", "b", "c"} {
		for i := range seenOwn {
			want = append(want, fmt.Sprintf("github:%s-%d", node, i))
		}
	}
	for _, id := range want {
		if len(acceptedBy[id]) != 1 {
			t.Errorf("%s accepted by nodes %v, want exactly one", id, acceptedBy[id])
		}
	}
	if len(acceptedBy) != len(want) {
		t.Errorf("%d IDs accepted, want %d", len(acceptedBy), len(want))
	}
	later := newIDSet(replayMemory, file, zerolog.Nop())
	lost := 0
	for _, id := range want {
		if later.add(id) {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d deliveries missing from the file (taken again by a gateway started later)", lost, len(want))
	}
}
