package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedDefaultLoads(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Domains[0] != "localhost" || c.Listen.HTTP != "localhost:8080" || c.TLS.Mode != "off" {
		t.Fatalf("default config: %+v", c)
	}
	tm, err := c.lifecycleTemplates()
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if tm[0].Command[0] != self || tm[0].Port != 3000 || tm[0].Ready.HTTPPath != "/healthz" {
		t.Fatalf("default template: %+v", tm[0])
	}
}

func TestEmptyFileGetsDefaults(t *testing.T) {
	c := load(t, "")
	if len(c.Templates) != 1 || c.Templates[0].Name != "demo" || c.Instance != "envgate" {
		t.Fatalf("empty file: %+v", c)
	}
}

func load(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := loadString(t, yaml)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loadString(t *testing.T, yaml string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "envgate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(path)
}

func TestConfigValues(t *testing.T) {
	c := load(t, `
instance: eg2
domains: [Dev.Example.COM.]
access: [{allow_cidrs: [10.0.0.0/8]}]
listen: {http: ":80", https: ":443"}
network: {pool: 10.99.0.0/24}
shutdown_timeout: 3s
tls: {mode: "off"}
templates:
  - name: web
    match: "feature-*"
    command: [npm, run, dev, --, --port, "{{.Port}}"]
    dir: /srv/{{.Name}}
    env: {DB: "sqlite://{{.DataDir}}/db"}
    port: 5173
    ready: {tcp: true, timeout: 90s}
    idle_timeout: 1m
    stop_grace: 2s
    user: nobody
`)
	if c.Domains[0] != "dev.example.com" || time.Duration(c.ShutdownTimeout) != 3*time.Second {
		t.Fatalf("parsed %+v", c)
	}
	tm, err := c.lifecycleTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if tm[0].Ready.Timeout != 90*time.Second || tm[0].IdleTimeout != time.Minute || tm[0].Ready.HTTPPath != "" || !tm[0].Matches("feature-1") || tm[0].Matches("main") {
		t.Fatalf("template %+v", tm[0])
	}
}

// Every error names the file, the line and the field.
func TestConfigErrorsNameFileLineField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "listen:\n  htps: \":443\"\n", ":2: htps: unknown key"},
		{"unknown top-level key", "domains: [x.test]\nlimitz: {}\n", ":2: limitz: unknown key"},
		{"bad duration", "templates:\n  - name: a\n    command: [x]\n    port: 1\n    idle_timeout: soon\n", `:5: templates[0].idle_timeout: "soon" is not a duration`},
		{"bad port", "templates:\n  - name: a\n    command: [x]\n    port: 70000\n", ":4: templates[0].port: 70000 is not a TCP port"},
		{"no command", "templates:\n  - name: a\n    port: 3000\n", ":2: templates[0].command: required"},
		{"bad placeholder", "templates:\n  - name: a\n    command: [\"{{.Nmae}}\"]\n    port: 1\n", ":3: templates[0].command[0]:"},
		{"bad pool", "network:\n  pool: 10.0.0.0/31\n", ":2: network.pool:"},
		{"bad instance", "instance: Has-Dash\n", ":1: instance:"},
		{"bad domain", "domains:\n  - ok.test\n  - \"bad_domain\"\n", ":3: domains[1]:"},
		{"bad tls mode", "tls:\n  mode: sometimes\n", ":2: tls.mode:"},
		{"bad listen", "listen:\n  http: 8080\n", ":2: listen.http:"},
		{"both probes", "templates:\n  - name: a\n    command: [x]\n    port: 1\n    ready: {http: /, tcp: true}\n", ":5: templates[0].ready: set http or tcp"},
		{"duplicate template", "templates:\n  - {name: a, command: [x], port: 1}\n  - {name: a, command: [x], port: 1}\n", ":3: templates[1].name:"},
		{"not yaml", "domains: [unclosed\n", "envgate.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			if err == nil {
				t.Fatal("loaded a broken config")
			}
			msg := err.Error()
			if !strings.Contains(msg, "envgate.yaml") || !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q: want it to name the file and contain %q", msg, tc.want)
			}
		})
	}
}

func TestConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}
