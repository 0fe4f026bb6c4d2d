package lifecycle_test

import (
	"errors"
	"testing"

	"github.com/envgate/envgate/lifecycle"
)

// Prepare's errors are *TemplateErrors naming the field, so that a config
// loader can point at the line that set it.
func TestPrepareErrorNamesTheField(t *testing.T) {
	ok := func() *lifecycle.Template {
		return &lifecycle.Template{Name: "t", Command: []string{"x"}, Port: 3000}
	}
	for _, tc := range []struct {
		field string
		edit  func(*lifecycle.Template)
	}{
		{"name", func(t *lifecycle.Template) { t.Name = "" }},
		{"command", func(t *lifecycle.Template) { t.Command = nil }},
		{"command[1]", func(t *lifecycle.Template) { t.Command = []string{"x", "{{.Nmae}}"} }},
		{"dir", func(t *lifecycle.Template) { t.Dir = "{{" }},
		{"env.DB", func(t *lifecycle.Template) { t.Env = map[string]string{"A": "a", "DB": "{{.Nope}}"} }},
		{"match", func(t *lifecycle.Template) { t.Match = "[" }},
		{"prepare[0]", func(t *lifecycle.Template) { t.PrepareSteps = [][]string{{}} }},
		{"ready.http", func(t *lifecycle.Template) { t.Ready.HTTPPath = "healthz" }},
		{"port", func(t *lifecycle.Template) { t.Port = 0 }},
		{"ports.web", func(t *lifecycle.Template) { t.Port, t.Ports = 0, map[string]int{"web": 70000} }},
		{"default_port", func(t *lifecycle.Template) { t.Port, t.Ports = 0, map[string]int{"web": 1, "api": 2} }},
		{"user", func(t *lifecycle.Template) { t.User = "no-such-user-here" }},
		{"user", func(t *lifecycle.Template) { t.User = "0" }},
	} {
		tm := ok()
		tc.edit(tm)
		err := tm.Prepare()
		te, isTE := errors.AsType[*lifecycle.TemplateError](err)
		if !isTE || te.Field != tc.field || te.Err == nil || err.Error() != tc.field+": "+te.Err.Error() {
			t.Errorf("%s: Prepare = %v; want a *TemplateError for that field", tc.field, err)
		}
	}
	if err := ok().Prepare(); err != nil {
		t.Fatalf("the unedited template: %v", err)
	}
}
