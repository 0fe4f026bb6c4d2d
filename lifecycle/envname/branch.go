package envname

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// BranchLabel maps a git branch name to an env name on its own, without
// looking at other branches: lowercased, every run of characters other
// than a-z and 0-9 turned into one '-', '-' trimmed from both ends, cut to
// 63 characters (and a trailing '-' trimmed again). feature/Login_Page
// becomes feature-login-page. The result never holds "--", so it is Valid
// whenever it is not ""; it is "" when the branch has no letter or digit,
// and such branches get no env. Two branches may map to one name (Labels
// tells them apart instead).
func BranchLabel(branch string) string {
	s := BranchSlug(branch)
	if len(s) > MaxLen {
		s = strings.TrimRight(s[:MaxLen], "-")
	}
	return s
}

// BranchSlug is BranchLabel before the cut to 63 characters.
func BranchSlug(branch string) string {
	b := make([]byte, 0, len(branch))
	dash := false
	for _, c := range []byte(strings.ToLower(branch)) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && len(b) > 0 {
				b = append(b, '-')
			}
			dash = false
			b = append(b, c)
			continue
		}
		dash = true
	}
	return string(b)
}

// hashLen is how many hex digits of a branch name's SHA-256 a shortened
// label ends with.
const hashLen = 8

// Labels maps branches to env names, returning label -> branch. A branch
// gets BranchLabel(branch) when that label is at most 63 characters and
// no other branch maps to it; otherwise it gets a shortened label with a
// hash of the branch name as its suffix (feature-x-1a2b3c4d). Among
// branches that share a label, a branch whose name is exactly that label
// keeps it, so adding feature/X does not rename branch feature-x's env.
// The result depends only on the set of branches, every label is Valid,
// and distinct branches never share one. Branches without a letter or
// digit get none.
func Labels(branches []string) map[string]string {
	bs := slices.Clone(branches)
	slices.Sort(bs)
	bs = slices.Compact(bs)
	byBase := make(map[string][]string)
	for _, b := range bs {
		if base := BranchSlug(b); base != "" {
			byBase[base] = append(byBase[base], b)
		}
	}
	out := make(map[string]string, len(bs))
	var hashed []string // branches that need a shortened label, sorted
	for base, group := range byBase {
		for _, b := range group {
			switch {
			case len(base) <= MaxLen && (len(group) == 1 || b == base):
				out[base] = b
			default:
				hashed = append(hashed, b)
			}
		}
	}
	slices.Sort(hashed)
	for _, b := range hashed {
		// A shortened label that another branch already has (a branch
		// literally named like it) takes the hash of the hash until it is
		// free: deterministic, since branches are taken in order.
		seed := b
		for {
			h := hexHash(seed)
			if l := ShortLabel(BranchSlug(b), h[:hashLen]); out[l] == "" {
				out[l] = b
				break
			}
			seed = h
		}
	}
	return out
}

func hexHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// ShortLabel is base cut so that "-" and suffix fit in 63 characters.
func ShortLabel(base, suffix string) string {
	keep := MaxLen - 1 - len(suffix)
	if len(base) > keep {
		base = base[:keep]
	}
	base = strings.TrimRight(base, "-")
	if base == "" {
		return suffix
	}
	return base + "-" + suffix
}

// LabelOf returns branch's label among branches ("" if it has none).
func LabelOf(branches []string, branch string) string {
	for l, b := range Labels(branches) {
		if b == branch {
			return l
		}
	}
	return ""
}
