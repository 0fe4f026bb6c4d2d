// Package sources says which env names exist and what code each runs: for
// a git repository, a mirror kept in the state dir, the mapping from
// branches to env names (labels) and a worktree per env at its branch's
// head. It runs the git CLI with a clean environment; it never starts dev
// servers (lifecycle does) and never answers HTTP (gateway does).
package sources

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/envgate/envgate/lifecycle"
)

// hashLen is how many hex digits of a branch name's SHA-256 a shortened
// label ends with.
const hashLen = 8

// Labels maps branches to env names (DNS labels), returning label ->
// branch. A branch gets lifecycle.BranchLabel(branch) when that label is
// at most 63 characters and no other branch maps to it; otherwise it gets
// a shortened label with a hash of the branch name as its suffix
// (feature-x-1a2b3c4d). Among branches that share a label, a branch whose
// name is exactly that label keeps it, so adding feature/X does not
// rename branch feature-x's env. The result depends only on the set of
// branches, every label is a valid env name, and distinct branches never
// share one. Branches without a letter or digit get none.
func Labels(branches []string) map[string]string {
	bs := slices.Clone(branches)
	slices.Sort(bs)
	bs = slices.Compact(bs)
	byBase := make(map[string][]string)
	for _, b := range bs {
		if base := fullLabel(b); base != "" {
			byBase[base] = append(byBase[base], b)
		}
	}
	out := make(map[string]string, len(bs))
	var hashed []string // branches that need a shortened label, sorted
	for base, group := range byBase {
		for _, b := range group {
			switch {
			case len(base) <= 63 && (len(group) == 1 || b == base):
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
			if l := ShortLabel(fullLabel(b), h[:hashLen]); out[l] == "" {
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
	keep := 63 - 1 - len(suffix)
	if len(base) > keep {
		base = base[:keep]
	}
	base = strings.TrimRight(base, "-")
	if base == "" {
		return suffix
	}
	return base + "-" + suffix
}

// fullLabel is lifecycle.BranchLabel without its cut to 63 characters, so
// that a long branch is told apart from a short one and gets a hash.
func fullLabel(branch string) string { return lifecycle.BranchSlug(branch) }

// LabelOf returns branch's label among branches ("" if it has none).
func LabelOf(branches []string, branch string) string {
	for l, b := range Labels(branches) {
		if b == branch {
			return l
		}
	}
	return ""
}
