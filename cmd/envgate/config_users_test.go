package main

import (
	"strings"
	"testing"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
)

// A template that names no user runs as dynamic users; allow_root keeps
// root; a named user stays as it is, with a warning from config --check.
func TestConfigUsers(t *testing.T) {
	c, err := loadString(t, `users: {uid_range: 70000-70099}
templates:
  - {name: dyn, match: "d-*", command: [x], port: 3000, rlimits: {nofile: 4096, nproc: 64}, tmp_size: 64MiB}
  - {name: rooted, match: "r-*", command: [x], port: 3000, allow_root: true}
  - {name: shared, command: [x], port: 3000, user: "65534:65534"}
`)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.uidRange(); r != (devserver.UIDRange{First: 70000, Last: 70099}) {
		t.Errorf("uid range %v", r)
	}
	tm, err := c.lifecycleTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if !tm[0].Dynamic() || tm[0].User != lifecycle.DynamicUser || tm[0].RLimits != (lifecycle.RLimits{OpenFiles: 4096, Processes: 64}) || tm[0].TmpSize != 64<<20 {
		t.Errorf("template dyn: user %q dynamic %v rlimits %+v tmp %d", tm[0].User, tm[0].Dynamic(), tm[0].RLimits, tm[0].TmpSize)
	}
	if tm[1].Dynamic() || tm[1].User != "" {
		t.Errorf("template rooted: user %q dynamic %v, want root", tm[1].User, tm[1].Dynamic())
	}
	if tm[2].Dynamic() || tm[2].User != "65534:65534" {
		t.Errorf("template shared: user %q dynamic %v", tm[2].User, tm[2].Dynamic())
	}
	w := strings.Join(c.userWarnings(), "\n")
	if strings.Contains(w, `"dyn"`) || !strings.Contains(w, "templates[1].user") || !strings.Contains(w, "templates[2].user") ||
		!strings.Contains(w, "can read the others' data dirs") {
		t.Errorf("warnings:\n%s\nwant one for rooted and one for shared, none for dyn", w)
	}

	for _, bad := range []string{"5-1", "0-10", "x-y", "100"} {
		_, err := loadString(t, "users: {uid_range: \""+bad+"\"}\n")
		if err == nil || !strings.Contains(err.Error(), ":1: users.uid_range:") {
			t.Errorf("uid_range %q: %v, want an error naming users.uid_range", bad, err)
		}
	}
}
