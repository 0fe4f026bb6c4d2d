package webhook

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// TestSeenFileBounded: the file never holds more than twice the set's
// size, and after a reload the newest IDs are still known and the oldest
// forgotten.
func TestSeenFileBounded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "seen")
	s := loadIDSet(3, file, zerolog.Nop())
	for i := range 20 {
		id := fmt.Sprintf("github:%d", i)
		if !s.add(id) {
			t.Fatalf("%s not new", id)
		}
		s.keep(id)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n > 6 {
			t.Fatalf("after %d deliveries the file holds %d lines, want at most 6", i+1, n)
		}
	}
	again := loadIDSet(3, file, zerolog.Nop())
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
