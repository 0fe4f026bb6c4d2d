package loadtest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"e1.dev.example.com":  "e1",
		"feature-x.localhost": "feature-x",
		"single":              "single",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func hostNames(t *testing.T, o Options) []string {
	t.Helper()
	o.Addr, o.Concurrency = "127.0.0.1:1", 1
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := newHostSet(&o)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range s.fixed {
		names = append(names, tg.host)
	}
	return names
}

func TestHostTemplate(t *testing.T) {
	got := hostNames(t, Options{HostTemplate: "e{{.I}}.dev.example.com", Envs: 3})
	want := []string{"e0.dev.example.com", "e1.dev.example.com", "e2.dev.example.com"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hosts %v, want %v", got, want)
	}
	// hotcold fixes only the hot set; never-seen hosts are made on demand.
	got = hostNames(t, Options{HostTemplate: "pr-{{.I}}.x", Envs: 100, Dist: "hotcold:2,0.1"})
	if !reflect.DeepEqual(got, []string{"pr-0.x", "pr-1.x"}) {
		t.Errorf("hotcold hosts %v, want the 2 hot ones", got)
	}
}

func TestHostSetGet(t *testing.T) {
	o := Options{Addr: "127.0.0.1:1", Concurrency: 1, HostTemplate: "e{{.I}}.x", Dist: "hotcold:2,0.5",
		Scheme: "https", Insecure: true, Path: "/p?q=1", ExpectBody: "env={{.Env}} host={{.Host}}"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := newHostSet(&o)
	if err != nil {
		t.Fatal(err)
	}
	tg, first, err := s.get(1)
	if err != nil || !first || tg.host != "e1.x" || tg.env != "e1" || string(tg.expect) != "env=e1 host=e1.x" ||
		tg.url.String() != "https://e1.x/p?q=1" {
		t.Fatalf("get(1) = %+v %v %v", tg, first, err)
	}
	if _, first, _ = s.get(1); first {
		t.Error("second get(1) reported a first request")
	}
	tg, first, err = s.get(41)
	if err != nil || !first || tg.host != "e41.x" {
		t.Errorf("get(41) = %+v %v %v, want a fresh e41.x", tg, first, err)
	}
}

func TestHostList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.txt")
	if err := os.WriteFile(path, []byte("# envs\na.dev.example.com\n\n  b.dev.example.com  \nc.dev.example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := ReadHostList(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.dev.example.com", "b.dev.example.com", "c.dev.example.com"}
	if !reflect.DeepEqual(list, want) {
		t.Fatalf("ReadHostList = %v, want %v", list, want)
	}
	if got := hostNames(t, Options{HostList: list, HostTemplate: "ignored{{.I}}.x"}); !reflect.DeepEqual(got, want) {
		t.Errorf("hosts %v, want the list %v", got, want)
	}

	// With hotcold, indices past the list wrap over its cold part.
	o := Options{Addr: "127.0.0.1:1", Concurrency: 1, HostList: list, Dist: "hotcold:1,0.5"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := newHostSet(&o)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int]string{1: "b.dev.example.com", 2: "c.dev.example.com", 3: "b.dev.example.com"} {
		if tg, _, err := s.get(i); err != nil || tg.host != want {
			t.Errorf("get(%d) = %v %v, want %s", i, tg, err, want)
		}
	}

	if _, err := ReadHostList(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("ReadHostList of a missing file: nil error")
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHostList(empty); err == nil {
		t.Error("ReadHostList of a file without hosts: nil error")
	}
}
