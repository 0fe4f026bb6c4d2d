package sources

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/rs/zerolog"
)

// NewBranches returns a Source that allows the env names of the branches
// of repo, a local repository read in place (bare, or a work tree holding
// .git), each named by envname.BranchLabel: branches that map to one name
// share it. It lists the branches now, failing if it cannot, then again
// every refresh (default DefaultRefresh) in the background until Close
// or ctx ends; a failed re-read keeps the last good set and logs a
// warning. A remote repository, or one whose envs get checkouts, needs a
// mirror: see NewGit.
func NewBranches(ctx context.Context, repo string, refresh time.Duration, log zerolog.Logger) (Source, error) {
	s, err := newBranches(ctx, repo, refresh, log, nil)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return s, nil
}

func newBranches(ctx context.Context, repo string, refresh time.Duration, log zerolog.Logger, onRefresh func(error)) (*polled, error) {
	gitDir := repo
	if _, err := os.Stat(filepath.Join(repo, ".git")); err == nil {
		gitDir = filepath.Join(repo, ".git")
	}
	return newPolled(ctx, "git repository "+repo, refresh, log, func(ctx context.Context) (map[string]struct{}, error) {
		heads, err := readHeads(ctx, gitDir)
		if err != nil {
			return nil, err
		}
		set := make(map[string]struct{}, len(heads))
		for b := range heads {
			if l := envname.BranchLabel(b); l != "" {
				set[l] = struct{}{}
			}
		}
		return set, nil
	}, onRefresh)
}
