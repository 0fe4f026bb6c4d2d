// Package sources says which env names exist and what code each runs: a
// fixed list, the subdirectories of a directory, or the branches of a git
// repository (read in place, or from a mirror kept in the state dir with a
// worktree per env at its branch's head), and what pull requests tell
// about them. Names come out of it as lifecycle/envname labels. It runs
// the git CLI with a clean environment; it never starts dev servers
// (lifecycle does) and never answers HTTP (gateway does).
package sources

import (
	"errors"
	"fmt"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
)

// Source decides which env names exist: lifecycle.Config.Allow is usually
// a Source's Allow. The manager calls Allow with its lock held, and the
// certificate layer during TLS handshakes, so Allow must be a fast
// in-memory lookup: sources that read the disk or run programs do it in
// the background and swap the result in.
type Source interface {
	// Allow returns nil if env name may exist, else why not.
	Allow(name string) error
	// Close stops any background refresh and waits for it. Allow keeps
	// answering from the last set read.
	Close()
}

// DefaultRefresh is how often dir and git sources without a mirror are
// re-read when no interval is given.
const DefaultRefresh = 5 * time.Second

// NewAny returns a Source that allows every name; the templates' match
// patterns alone then decide.
func NewAny() Source { return anySource{} }

type anySource struct{}

func (anySource) Allow(string) error { return nil }
func (anySource) Close()             {}

// NewList returns a Source that allows exactly names, each an env name
// (envname.Valid).
func NewList(names []string) (Source, error) {
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		if !envname.Valid(n) {
			return nil, fmt.Errorf("sources: list: %q is not an env name (a DNS label: 1-63 of a-z, 0-9 and '-' inside)", n)
		}
		set[n] = struct{}{}
	}
	return listSource(set), nil
}

type listSource map[string]struct{}

func (s listSource) Allow(name string) error {
	if _, ok := s[name]; !ok {
		return errors.New("not in the source's list of names")
	}
	return nil
}

func (listSource) Close() {}
