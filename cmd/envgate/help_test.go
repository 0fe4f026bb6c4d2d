package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every command's --help must work: cobra panics at run time on clashing
// flag shorthands, which no compiler catches.
func TestEveryCommandHelp(t *testing.T) {
	root := newRootCmd()
	cmds := [][]string{{}}
	for _, c := range root.Commands() {
		cmds = append(cmds, []string{c.Name()})
	}
	for _, args := range cmds {
		t.Run(strings.Join(append([]string{"envgate"}, args...), " "), func(t *testing.T) {
			r := newRootCmd()
			var out bytes.Buffer
			r.SetOut(&out)
			r.SetErr(&out)
			r.SetArgs(append(args, "--help"))
			if err := r.Execute(); err != nil {
				t.Fatalf("--help: %v", err)
			}
			if !strings.Contains(out.String(), "Usage:") {
				t.Fatalf("--help printed no usage:\n%s", out.String())
			}
		})
	}
}
