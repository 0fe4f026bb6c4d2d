package main

import (
	"errors"
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

// Values of the wrong kind, keys written twice and merges: each error a
// *FieldError with the file, the line and the field, made where the
// problem was found.
func TestConfigDecodeErrors(t *testing.T) {
	const tmpl = "templates:\n  - name: a\n    command: [x]\n"
	for _, tc := range []struct {
		name, yaml    string
		line          int
		field, errHas string
	}{
		{"int from a word", tmpl + "    port: abc\n", 4, "templates[0].port", `"abc": want a whole number`},
		{"uint below zero", tmpl + "    port: 1\n    rlimits: {nofile: -1}\n", 5, "templates[0].rlimits.nofile", "want a whole number of 0 or more"},
		{"bool from a word", "listen:\n  h2c: maybe\n", 2, "listen.h2c", `"maybe": want true or false`},
		{"list for a string", "listen:\n  http: [a]\n", 2, "listen.http", "want a string, not a list"},
		{"word for a list", "templates:\n  - name: a\n    command: x\n    port: 1\n", 3, "templates[0].command", `want a list, not "x"`},
		{"section for a list", "templates: {a: 1}\n", 1, "templates", "want a list, not a section of keys"},
		{"list for a section", "listen: [a, b]\n", 1, "listen", "want a section of keys, not a list"},
		{"list for a map", tmpl + "    port: 1\n    env: [a]\n", 5, "templates[0].env", "want a map of keys to values, not a list"},
		{"a key twice", "instance: a\ninstance: b\n", 2, "instance", "set twice (first on line 1)"},
		{"a key twice beside a merge", "templates:\n  - &t {name: a, command: [x], port: 1}\n  - <<: *t\n    name: b\n    name: c\n", 5, "templates[1].name", "set twice (first on line 4)"},
		{"merge of a word", "templates:\n  - <<: 5\n", 2, "templates[0]", `<<: want a mapping to merge, not "5"`},
		{"unknown key in a merged mapping", "templates:\n  - <<: {name: a, command: [x], port: 1, bogus: 2}\n", 2, "bogus", "unknown key in templates[0]"},
		{"bad size", tmpl + "    port: 1\n    tmp_size: lots\n", 5, "templates[0].tmp_size", `"lots" is not a size`},
		{"template field from lifecycle", tmpl + "    port: 1\n    ready: {http: healthz}\n", 5, "templates[0].ready.http", `"healthz" must start with /`},
		{"tls field from certs", "domains: [x.example.com]\ntls:\n  mode: acme\n  email: nope\n" + tmpl + "    port: 1\n", 4, "tls.email", `"nope" is not an email address`},
		{"egress entry", tmpl + "    port: 1\n    network: {egress: [300.1.1.1]}\n", 5, "templates[0].network.egress[0]", "want an IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			fe, ok := errors.AsType[*FieldError](err)
			if !ok {
				t.Fatalf("error %v: want a *FieldError", err)
			}
			if filepath.Base(fe.File) != "envgate.yaml" || fe.Line != tc.line || fe.Field != tc.field || !strings.Contains(fe.Err.Error(), tc.errHas) {
				t.Fatalf("FieldError{File %q, Line %d, Field %q, Err %q}: want line %d, field %q, an Err with %q",
					fe.File, fe.Line, fe.Field, fe.Err, tc.line, tc.field, tc.errHas)
			}
		})
	}
}

// Anchors, aliases and merges load as yaml.v3 decodes them: keys written
// out override merged ones.
func TestConfigMergesAndAliases(t *testing.T) {
	c := load(t, `
templates:
  - &web {name: web, match: "web-*", command: &cmd ["{{.Self}}", demo, --port, "{{.Port}}"], port: 3000}
  - <<: *web
    name: api
    match: "api-*"
    port: 3001
  - {name: rest, command: *cmd, port: 3002}
`)
	if len(c.Templates) != 3 {
		t.Fatalf("templates: %+v", c.Templates)
	}
	api, rest := c.Templates[1], c.Templates[2]
	if api.Name != "api" || api.Match != "api-*" || api.Port != 3001 || len(api.Command) != 4 || api.Command[1] != "demo" {
		t.Errorf("merged template: %+v", api)
	}
	if len(rest.Command) != 4 || rest.Command[1] != "demo" {
		t.Errorf("aliased command: %+v", rest)
	}
}

// A YAML syntax error names the file, and yaml.v3's text the line.
func TestConfigSyntaxError(t *testing.T) {
	_, err := loadString(t, "domains: [unclosed\n")
	fe, ok := errors.AsType[*FieldError](err)
	if !ok || filepath.Base(fe.File) != "envgate.yaml" || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("error %v: want a *FieldError naming the file and line 1", err)
	}
}
