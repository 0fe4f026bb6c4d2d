package main

import (
	"strings"
	"testing"
)

func TestConfigLifecycleKeys(t *testing.T) {
	c, err := loadString(t, `limits: {max_envs: 5, max_starting: 3, min_available_memory: 1.5GiB}
network: {warm_pool: 4}
on_restart: clean
templates:
  - name: a
    command: [x]
    port: 3000
    max_lifetime: 8h
    user: "65534:65534"
    resources: {memory: 512MiB, cpus: 0.5, pids: 256}
`)
	if err != nil {
		t.Fatal(err)
	}
	l := c.lifecycleLimits()
	if l.MaxEnvs != 5 || l.MaxStarting != 3 || l.MinAvailableMemory != 3<<29 {
		t.Fatalf("limits %+v", l)
	}
	if c.OnRestart != "clean" || c.Network.WarmPool != 4 {
		t.Fatalf("on_restart %q", c.OnRestart)
	}
	tm, err := c.lifecycleTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if r := tm[0].Resources; r.Memory != 512<<20 || r.CPUs != 0.5 || r.Pids != 256 || tm[0].User != "65534:65534" || tm[0].MaxLifetime.Hours() != 8 {
		t.Fatalf("template %+v", tm[0])
	}

	d, err := loadString(t, "domains: [x.test]\naccess: [{allow_cidrs: [10.0.0.0/8]}]\n"+publicBasics)
	if err != nil {
		t.Fatal(err)
	}
	// A public domain gets a cap by default; localhost keeps none.
	if d.OnRestart != "adopt" || d.Limits.MaxEnvs != 100 {
		t.Fatalf("defaults: on_restart %q, limits %+v", d.OnRestart, d.Limits)
	}
}

func TestConfigLifecycleErrorsNameFileLineField(t *testing.T) {
	tmpl := "templates:\n  - name: a\n    command: [x]\n    port: 1\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bad size", "limits:\n  min_available_memory: lots\n", `:2: limits.min_available_memory: "lots" is not a size`},
		{"negative max_envs", "limits:\n  max_envs: -1\n", ":2: limits.max_envs:"},
		{"bad on_restart", "on_restart: reuse\n", `:1: on_restart: "reuse": want adopt or clean`},
		{"negative warm_pool", "network:\n  warm_pool: -2\n", ":2: network.warm_pool:"},
		{"root user", tmpl + "    user: root\n", ":5: templates[0].user:"},
		{"unknown user", tmpl + "    user: no-such-user-here\n", ":5: templates[0].user:"},
		{"negative cpus", tmpl + "    resources: {cpus: -1}\n", ":5: templates[0].resources.cpus:"},
		{"tiny memory", tmpl + "    resources:\n      memory: 1KiB\n", ":6: templates[0].resources.memory:"},
		{"unknown resource", tmpl + "    resources: {disk: 1GiB}\n", ":5: disk: unknown key"},
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

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"512MiB", 512 << 20, true},
		{"1GiB", 1 << 30, true},
		{"1.5GiB", 3 << 29, true},
		{"100MB", 100e6, true},
		{"4096", 4096, true},
		{"2G", 2 << 30, true},
		{"-1GiB", 0, false},
		{"GiB", 0, false},
		{"12 parsecs", 0, false},
		// Edge forms: spaces, bytes, fractions, exponents, each unit.
		{"512 MiB", 512 << 20, true},
		{" 512MiB\n", 512 << 20, true},
		{"512 \t MiB", 512 << 20, true},
		{"4096B", 4096, true},
		{"0", 0, true},
		{"0.5KiB", 512, true},
		{".5K", 512, true},
		{"1e3KB", 1e6, true},
		{"1e3", 1000, true},
		{"1K", 1 << 10, true},
		{"1KB", 1e3, true},
		{"3M", 3 << 20, true},
		{"1TB", 1e12, true},
		{"1T", 1 << 40, true},
		{"1TiB", 1 << 40, true},
		{"+5MiB", 5 << 20, true},
		{"1e-3KiB", 1, true},
		{"5B ", 5, true},
		{"512mib", 512 << 20, true}, // go-units: units in any case
		{"512Mi", 0, false},
		{"512MiBs", 0, false},
		{"5 12MiB", 0, false},
		{"1.5.5GiB", 0, false},
		{"NaNGiB", 0, false},
		{"InfB", 0, false},
		{"9e18", 0, false},
		{"8EiB", 0, false},
		{"", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512MiB", "1.5GiB", "4096", "1e3KB", "-1", "NaNGiB", "InfB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if z, err := ParseSize(s); err == nil && z < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, z)
		}
	})
}
