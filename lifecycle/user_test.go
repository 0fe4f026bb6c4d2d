package lifecycle_test

import (
	"strings"
	"testing"

	"github.com/envgate/envgate/lifecycle"
)

func TestTemplateUser(t *testing.T) {
	for _, tc := range []struct {
		user      string
		allowRoot bool
		wantErr   string
	}{
		{user: "nobody"},
		{user: "65534:65534"},
		{user: "65534"},
		{user: "root", wantErr: "allow_root"},
		{user: "0:0", wantErr: "allow_root"},
		{user: "0:0", allowRoot: true},
		{user: "no-such-user-here", wantErr: "no-such-user-here"},
		{user: "1:x", wantErr: "uid:gid"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			tp := &lifecycle.Template{Name: "t", Command: []string{"true"}, Port: 3000, User: tc.user, AllowRoot: tc.allowRoot}
			err := tp.Prepare()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "user: ")) {
				t.Fatalf("Prepare: %v, want a user: error mentioning %q", err, tc.wantErr)
			}
		})
	}
}
