package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDemoProgram(t *testing.T) {
	for name, tc := range map[string]struct {
		mode os.FileMode // of envgate-demo beside self; 0: absent
		dir  bool        // envgate-demo is a directory
		want string      // "demo" or "self"
	}{
		"beside, 0755":            {mode: 0o755, want: "demo"},
		"absent":                  {want: "self"},
		"not executable by all":   {mode: 0o750, want: "self"},
		"a directory, not a file": {dir: true, want: "self"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			self := filepath.Join(dir, "envgate")
			demo := filepath.Join(dir, demoName)
			switch {
			case tc.dir:
				if err := os.Mkdir(demo, 0o755); err != nil {
					t.Fatal(err)
				}
			case tc.mode != 0:
				if err := os.WriteFile(demo, []byte("#!/bin/sh\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(demo, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			want := map[string]string{"demo": demo, "self": self}[tc.want]
			if got := demoProgram(self); got != want {
				t.Fatalf("demoProgram(%s) = %s, want %s", self, got, want)
			}
		})
	}
}
