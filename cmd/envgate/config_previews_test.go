package main

import (
	"strings"
	"testing"
)

// TestConfigPreviewsErrors: mistakes in the preview keys are refused with
// the file, line and field.
func TestConfigPreviewsErrors(t *testing.T) {
	tmpl := "templates:\n  - name: web\n    command: [x]\n    port: 3000\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"checkouts without git", "source: {kind: any, checkouts: true}\n", ":1: source.checkouts: only for kind git"},
		{"prepare without checkouts", "source: {kind: git, repo: /srv/repo.git}\n" + tmpl + "    prepare: [[make]]\n", ":6: templates[0].prepare: prepare steps run in the env's checkout"},
		{"empty prepare step", "source: {kind: git, repo: /srv/repo.git, checkouts: true}\n" + tmpl + "    prepare: [[]]\n", ":6: templates[0].prepare[0]: empty command"},
		{"relative repo", "source: {kind: git, repo: repo.git}\n", "source.repo: \"repo.git\": kind git needs a repository URL or absolute path"},
		{"unknown key", "source: {kind: git, repo: /srv/r.git, checkout: true}\n", "checkout"},
		{"previews without git", "previews: {on_push: restart}\n", ":1: previews: previews need source.kind: git"},
		{"bad on_push", "source: {kind: git, repo: /srv/r.git}\npreviews: {on_push: later}\n", ":2: previews.on_push: \"later\": want restart or next-request"},
		{"github without repo", "source: {kind: git, repo: /srv/r.git}\npreviews:\n  github: {secret_file: /s, token_file: /t}\n", ":3: previews.github.repo"},
		{"gitlab token without project", "source: {kind: git, repo: /srv/r.git}\npreviews:\n  gitlab: {secret_file: /s, token_file: /t}\n", ":3: previews.gitlab.project: needed with token_file"},
		{"relative secret", "source: {kind: git, repo: /srv/r.git}\npreviews:\n  gitlab: {secret_file: s}\n", ":3: previews.gitlab.secret_file"},
		{"previews.host outside the internal CA's domains", "source: {kind: git, repo: /srv/r.git}\npreviews:\n  host: hooks.example.com\n  github: {secret_file: /s}\n", ":3: previews.host: \"hooks.example.com\" is not under a configured domain"},
		{"relative credentials file", "source: {kind: git, repo: https://example.com/r.git, credentials_file: creds}\n", ":1: source.credentials_file: \"creds\": want the absolute path"},
		{"unknown previews key", "source: {kind: git, repo: /srv/r.git}\npreviews: {destroy_afer: 1h}\n", "destroy_afer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "envgate.yaml") {
				t.Fatalf("error %v, want one naming envgate.yaml and containing %q", err, tc.want)
			}
		})
	}
	for _, repo := range []string{"https://github.com/acme/app.git", "git@github.com:acme/app.git", "ssh://git@host/app.git", "/srv/app.git"} {
		c, err := loadString(t, "source: {kind: git, repo: \""+repo+"\", checkouts: true}\n"+tmpl+"    dir: \"{{.Checkout}}\"\n    prepare: [[npm, ci]]\n")
		if err != nil {
			t.Errorf("repo %s: %v", repo, err)
			continue
		}
		if !c.Source.mirrored() || len(c.Templates[0].Prepare) != 1 {
			t.Errorf("repo %s: mirrored %v prepare %v", repo, c.Source.mirrored(), c.Templates[0].Prepare)
		}
	}
}
