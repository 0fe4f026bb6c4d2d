package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
)

func TestConfigSource(t *testing.T) {
	checkouts := t.TempDir()
	for _, d := range []string{"main", "feature-x"} {
		if err := os.Mkdir(filepath.Join(checkouts, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, yaml string
		allowed    []string
		refused    []string
	}{
		{"default", "domains: [x.test]\naccess: [{allow_cidrs: [10.0.0.0/8]}]\n" + publicBasics, []string{"anything", "main"}, nil},
		{"any", "source: {kind: any}\n", []string{"anything"}, nil},
		{"list", "source:\n  kind: list\n  names: [main, pr-12]\n", []string{"main", "pr-12"}, []string{"pr-13", "feature-x"}},
		{"dir", "source: {kind: dir, path: " + checkouts + ", refresh: 1s}\n", []string{"main", "feature-x"}, []string{"pr-12"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadString(t, tc.yaml)
			if err != nil {
				t.Fatal(err)
			}
			src, err := c.envSource(t.Context(), zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(src.Close)
			for _, n := range tc.allowed {
				if err := src.Allow(n); err != nil {
					t.Errorf("%s refused: %v", n, err)
				}
			}
			for _, n := range tc.refused {
				if err := src.Allow(n); err == nil {
					t.Errorf("%s allowed", n)
				}
			}
		})
	}
	c, err := loadString(t, "source: {kind: dir, path: /srv/checkouts, refresh: 2s}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Source.Kind != "dir" || time.Duration(c.Source.Refresh) != 2*time.Second {
		t.Errorf("source %+v", c.Source)
	}
}

func TestConfigSourceErrorsNameFileLineField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bad kind", "source:\n  kind: ldap\n", `:2: source.kind: "ldap": want any, list, dir or git`},
		{"list without names", "source:\n  kind: list\n", ":1: source.names: kind list needs names"},
		{"bad name", "source:\n  kind: list\n  names:\n    - main\n    - Feature_X\n", `:5: source.names[1]: "Feature_X" is not an env name`},
		{"long name", "source: {kind: list, names: [" + strings.Repeat("a", 64) + "]}\n", ":1: source.names[0]:"},
		{"dir without path", "source:\n  kind: dir\n", ":1: source.path: \"\": kind dir needs an absolute path"},
		{"relative dir", "source:\n  kind: dir\n  path: checkouts\n", ":3: source.path:"},
		{"git without repo", "source:\n  kind: git\n", ":1: source.repo:"},
		{"names with dir", "source:\n  kind: dir\n  path: /srv\n  names: [a]\n", ":4: source.names: only for kind list"},
		{"repo with list", "source:\n  kind: list\n  names: [a]\n  repo: /r.git\n", ":4: source.repo: only for kind git"},
		{"refresh with list", "source:\n  kind: list\n  names: [a]\n  refresh: 5s\n", ":4: source.refresh: only for kinds dir and git"},
		{"tiny refresh", "source:\n  kind: git\n  repo: /r.git\n  refresh: 1ms\n", ":4: source.refresh: 1ms: want 100ms or more"},
		{"bad refresh", "source:\n  kind: git\n  repo: /r.git\n  refresh: often\n", `:4: source.refresh: "often" is not a duration`},
		{"unknown key", "source:\n  kind: dir\n  paths: /srv\n", ":3: paths: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			if err == nil {
				t.Fatal("loaded a broken config")
			}
			if msg := err.Error(); !strings.Contains(msg, "envgate.yaml") || !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q: want it to name the file and contain %q", msg, tc.want)
			}
		})
	}
}

// TestConfigSourceFirstReadFails: a dir or git source that cannot be read
// at start stops serve, with an error naming the key.
func TestConfigSourceFirstReadFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct{ yaml, want string }{
		{"source:\n  kind: dir\n  path: " + missing + "\n", ":3: source.path: sources: env source directory " + missing},
		{"source:\n  kind: git\n  repo: " + missing + "\n", ":3: source.repo: sources: env source git repository " + missing},
	} {
		c, err := loadString(t, tc.yaml)
		if err != nil {
			t.Fatal(err)
		}
		if src, err := c.envSource(t.Context(), zerolog.Nop()); err == nil {
			src.Close()
			t.Errorf("%q: source made", tc.yaml)
		} else if !strings.Contains(err.Error(), "envgate.yaml") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q: want it to name the file and contain %q", err, tc.want)
		}
	}
}

// TestServeDirSource runs the real gateway with a dir source: a name
// without a checkout is answered 404 no_such_env, one that appears is
// served once the background refresh has seen it.
func TestServeDirSource(t *testing.T) {
	checkouts := t.TempDir()
	if err := os.Mkdir(filepath.Join(checkouts, "main"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, cfg, addr := testInstance(t, 6, "source: {kind: dir, path: "+checkouts+", refresh: 100ms}\n")
	g := startServe(t, cfg, addr)
	// A graceful stop removes the envs' namespaces before the leak check,
	// even when the test fails half-way.
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	if code, body, _ := g.get(t, "main.localhost", "/"); code != 200 || !strings.Contains(body, "main") {
		t.Fatalf("main: %d %q", code, body)
	}
	if code, body, _ := g.get(t, "feature-x.localhost", "/"); code != 404 || !strings.Contains(body, "no_such_env") {
		t.Fatalf("feature-x without a checkout: %d %q, want 404 no_such_env", code, body)
	}
	if err := os.Mkdir(filepath.Join(checkouts, "feature-x"), 0o755); err != nil {
		t.Fatal(err)
	}
	// 404 until a refresh has seen the checkout, then the env itself.
	var code int
	var body string
	wait.Until(30*time.Second, func() bool {
		code, body, _ = g.get(t, "feature-x.localhost", "/")
		return code != 404
	})
	if code != 200 || !strings.Contains(body, "feature-x") {
		t.Fatalf("feature-x after its checkout appeared: %d %q", code, body)
	}
}

func TestServeFailsOnUnreadableSource(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, cfg, _ := testInstance(t, 6, "source: {kind: dir, path: "+missing+"}\n")
	out, err := exec.Command(envgateBinary(t), "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "envgate.yaml:8: source.path:") || !strings.Contains(string(out), missing) {
		t.Fatalf("serve with a missing source dir: %v\n%s", err, out)
	}
}
