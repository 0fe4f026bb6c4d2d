package envname

import (
	"strings"
	"testing"
)

func TestBranchLabel(t *testing.T) {
	long := strings.Repeat("a", 62) + "/b" // the cut lands right after a '-'
	for _, tc := range []struct{ branch, want string }{
		{"main", "main"},
		{"feature/Login_Page", "feature-login-page"},
		{"Feature-X", "feature-x"},
		{"fix--double", "fix-double"},
		{"--lead/trail--", "lead-trail"},
		{"release/1.2.3", "release-1-2-3"},
		{"users/ana/ñandú", "users-ana-and"},
		{"dependabot/npm_and_yarn/lodash-4.17.21", "dependabot-npm-and-yarn-lodash-4-17-21"},
		{"xn--bcher-kva", "xn-bcher-kva"}, // never an A-label: no "--"
		{long, strings.Repeat("a", 62)},
		{strings.Repeat("x", 70), strings.Repeat("x", 63)},
		{"___", ""},
		{"", ""},
	} {
		if got := BranchLabel(tc.branch); got != tc.want {
			t.Errorf("BranchLabel(%q) = %q, want %q", tc.branch, got, tc.want)
		}
	}
}

func FuzzBranchLabel(f *testing.F) {
	for _, s := range []string{"main", "feature/Login_Page", "--x--", strings.Repeat("ab-", 40), "ü", "XN--bcher-kva", "a" + strings.Repeat("/", 70) + "b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, branch string) {
		l := BranchLabel(branch)
		if l == "" {
			if BranchSlug(branch) != "" {
				t.Fatalf("BranchLabel(%q) = \"\" for a branch with a letter or digit", branch)
			}
			return
		}
		if !Valid(l) {
			t.Fatalf("BranchLabel(%q) = %q, not an env name", branch, l)
		}
		if strings.Contains(l, "--") {
			t.Fatalf("BranchLabel(%q) = %q holds --", branch, l)
		}
		if !strings.HasPrefix(BranchSlug(branch), l) {
			t.Fatalf("BranchLabel(%q) = %q is not a cut of BranchSlug %q", branch, l, BranchSlug(branch))
		}
	})
}

var long90 = "feature/" + strings.Repeat("very-long-branch-name-", 4)[:82]

func TestLabels(t *testing.T) {
	tests := []struct {
		name     string
		branches []string
		want     map[string]string // branch -> label
	}{
		{"plain", []string{"main", "feature/Login_Page"},
			map[string]string{"main": "main", "feature/Login_Page": "feature-login-page"}},
		{"canonical keeps its label", []string{"feature-x", "feature/X"},
			map[string]string{"feature-x": "feature-x", "feature/X": "feature-x-" + hashOf("feature/X")}},
		{"no canonical: both hashed", []string{"a/b", "a_b"},
			map[string]string{"a/b": "a-b-" + hashOf("a/b"), "a_b": "a-b-" + hashOf("a_b")}},
		{"no letters", []string{"///", "main"}, map[string]string{"main": "main"}},
		{"long", []string{long90},
			map[string]string{long90: ShortLabel(BranchSlug(long90), hashOf(long90))}},
		{"exactly 63", []string{strings.Repeat("a", 63)},
			map[string]string{strings.Repeat("a", 63): strings.Repeat("a", 63)}},
		{"64 is shortened", []string{strings.Repeat("a", 64)},
			map[string]string{strings.Repeat("a", 64): strings.Repeat("a", 54) + "-" + hashOf(strings.Repeat("a", 64))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Labels(tt.branches)
			if len(got) != len(tt.want) {
				t.Errorf("Labels(%q) = %v, want %d labels", tt.branches, got, len(tt.want))
			}
			for b, l := range tt.want {
				if got[l] != b {
					t.Errorf("Labels(%q): branch %q: want label %q; got map %v", tt.branches, b, l, got)
				}
				if !Valid(l) {
					t.Errorf("label %q is not a valid env name", l)
				}
				if LabelOf(tt.branches, b) != l {
					t.Errorf("LabelOf(%q, %q) = %q, want %q", tt.branches, b, LabelOf(tt.branches, b), l)
				}
			}
		})
	}
}

// TestLabelsTakenShortLabel: a branch literally named like another's
// shortened label keeps it; the other gets a different, still valid one.
func TestLabelsTakenShortLabel(t *testing.T) {
	short := ShortLabel(BranchSlug(long90), hashOf(long90))
	got := Labels([]string{long90, short})
	if got[short] != short {
		t.Fatalf("branch %q lost its own label: %v", short, got)
	}
	if len(got) != 2 {
		t.Fatalf("want 2 labels, got %v", got)
	}
	for l := range got {
		if !Valid(l) {
			t.Errorf("label %q is not a valid env name", l)
		}
	}
}

func hashOf(b string) string { return hexHash(b)[:hashLen] }

func FuzzLabels(f *testing.F) {
	f.Add("main", "feature/Login_Page", long90)
	f.Add("feature-x", "feature/X", "FEATURE_X")
	f.Add("a/b", "a_b", "a-b-"+hexHash("a/b"))
	f.Add(strings.Repeat("x", 63), strings.Repeat("x", 64), strings.Repeat("x", 200))
	f.Fuzz(func(t *testing.T, a, b, c string) {
		branches := []string{a, b, c}
		got := Labels(branches)
		seen := make(map[string]bool)
		for l, br := range got {
			if !Valid(l) {
				t.Fatalf("Labels(%q): %q is not a valid env name", branches, l)
			}
			if seen[br] {
				t.Fatalf("Labels(%q): branch %q has two labels: %v", branches, br, got)
			}
			seen[br] = true
		}
		// Every branch with a letter or digit has a label (so distinct
		// branches, each with its own map entry, never share one).
		for _, br := range branches {
			if BranchSlug(br) != "" && !seen[br] {
				t.Fatalf("Labels(%q): branch %q has no label: %v", branches, br, got)
			}
		}
		// Deterministic whatever the order.
		again := Labels([]string{c, a, b})
		for l, br := range got {
			if again[l] != br {
				t.Fatalf("Labels not deterministic: %v vs %v", got, again)
			}
		}
	})
}
