package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Source decides which env names exist: Config.Allow is usually a
// Source's Allow. The manager calls Allow with its lock held, and the
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

// DefaultSourceRefresh is how often dir and git sources are re-read when
// no interval is given.
const DefaultSourceRefresh = 5 * time.Second

// sourceReadTimeout bounds one read of a dir or git source, so a hung
// filesystem or git never stops the refresh loop for good.
const sourceReadTimeout = 30 * time.Second

// NewAnySource returns a Source that allows every name; the templates'
// match patterns alone then decide.
func NewAnySource() Source { return anySource{} }

type anySource struct{}

func (anySource) Allow(string) error { return nil }
func (anySource) Close()             {}

// NewListSource returns a Source that allows exactly names, each a
// lowercase DNS label.
func NewListSource(names []string) (Source, error) {
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		if !ValidName(n) {
			return nil, fmt.Errorf("lifecycle: list source: %q is not an env name (a DNS label: 1-63 of a-z, 0-9 and '-' inside)", n)
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

// NewDirSource returns a Source that allows the names of path's
// subdirectories (symlinks to directories count) that are env names;
// other entries are ignored. It reads path now, failing if it cannot,
// then again every refresh (default DefaultSourceRefresh) in the
// background until Close or ctx ends; a failed re-read keeps the last
// good set and logs a warning.
func NewDirSource(ctx context.Context, path string, refresh time.Duration, log zerolog.Logger) (Source, error) {
	return newPolledSource(ctx, "directory "+path, refresh, log, func(context.Context) (map[string]struct{}, error) {
		return readDirNames(path)
	})
}

func readDirNames(path string) (map[string]struct{}, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	set := make(map[string]struct{}, len(entries))
	for _, de := range entries {
		if !ValidName(de.Name()) {
			continue
		}
		isDir := de.IsDir()
		if de.Type()&os.ModeSymlink != 0 {
			fi, err := os.Stat(filepath.Join(path, de.Name()))
			isDir = err == nil && fi.IsDir()
		}
		if isDir {
			set[de.Name()] = struct{}{}
		}
	}
	return set, nil
}

// NewGitSource returns a Source that allows the env names of repo's
// branches (see BranchLabel). repo is a bare repository or a work tree
// holding .git. It lists the branches now with git, failing if it cannot,
// then again every refresh (default DefaultSourceRefresh) in the
// background until Close or ctx ends; a failed re-read keeps the last
// good set and logs a warning.
func NewGitSource(ctx context.Context, repo string, refresh time.Duration, log zerolog.Logger) (Source, error) {
	gitDir := repo
	if _, err := os.Stat(filepath.Join(repo, ".git")); err == nil {
		gitDir = filepath.Join(repo, ".git")
	}
	return newPolledSource(ctx, "git repository "+repo, refresh, log, func(ctx context.Context) (map[string]struct{}, error) {
		return readBranchLabels(ctx, gitDir)
	})
}

func readBranchLabels(ctx context.Context, gitDir string) (map[string]struct{}, error) {
	// %(refname), not %(refname:short): the short form of branch main is
	// heads/main when a tag main exists too.
	cmd := exec.CommandContext(ctx, "git", "for-each-ref", "--format=%(refname)", "refs/heads")
	// An explicit GIT_DIR also skips git's safe.directory ownership check,
	// which would refuse a repository owned by another user than the
	// gateway's.
	cmd.Env = append(os.Environ(), "GIT_DIR="+gitDir, "GIT_TERMINAL_PROMPT=0")
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("git for-each-ref: %w: %s", err, msg)
		}
		return nil, fmt.Errorf("git for-each-ref: %w", err)
	}
	set := make(map[string]struct{})
	for line := range strings.SplitSeq(string(out), "\n") {
		branch, ok := strings.CutPrefix(line, "refs/heads/")
		if !ok {
			continue
		}
		if l := BranchLabel(branch); l != "" {
			set[l] = struct{}{}
		}
	}
	return set, nil
}

// BranchLabel maps a git branch name to the env name a git source allows
// for it: lowercased, every run of characters other than a-z and 0-9
// turned into one '-', '-' trimmed from both ends, cut to 63 characters
// (and a trailing '-' trimmed again). feature/Login_Page becomes
// feature-login-page. The result never holds "--"; it is "" when the
// branch has no letter or digit, and such branches get no env. Two
// branches may map to one name; it is then allowed while either exists.
func BranchLabel(branch string) string {
	b := []byte(BranchSlug(branch))
	if len(b) > 63 {
		b = bytes.TrimRight(b[:63], "-")
	}
	return string(b)
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

// ValidName reports whether s is a lowercase LDH DNS label (letters,
// digits and inner hyphens, at most 63 bytes): the form of every env name
// the gateway passes on. gateway.ValidLabel adds the IDNA check.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// polledSource allows the names its read function last returned. Allow
// only loads a pointer; the reads happen on the refresh goroutine.
type polledSource struct {
	what    string // "directory /srv/checkouts", for messages
	names   atomic.Pointer[map[string]struct{}]
	read    func(context.Context) (map[string]struct{}, error)
	log     zerolog.Logger
	cancel  context.CancelFunc
	done    chan struct{}
	closeMu sync.Once

	failing string // the last read's error, "" after a good read; refresh goroutine only
}

func newPolledSource(ctx context.Context, what string, refresh time.Duration, log zerolog.Logger,
	read func(context.Context) (map[string]struct{}, error)) (*polledSource, error) {
	if refresh <= 0 {
		refresh = DefaultSourceRefresh
	}
	s := &polledSource{what: what, read: read, log: log, done: make(chan struct{})}
	rctx, cancel := context.WithTimeout(ctx, sourceReadTimeout)
	set, err := read(rctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("lifecycle: env source %s: %w", what, err)
	}
	s.names.Store(&set)
	log.Info().Str("source", what).Int("envs", len(set)).Dur("refresh", refresh).Msg("env source read")
	ctx, s.cancel = context.WithCancel(ctx)
	go s.refreshLoop(ctx, refresh)
	return s, nil
}

func (s *polledSource) Allow(name string) error {
	if _, ok := (*s.names.Load())[name]; !ok {
		return fmt.Errorf("%s has no %s", s.what, name)
	}
	return nil
}

// Close stops the refresh goroutine and waits for it.
func (s *polledSource) Close() {
	s.closeMu.Do(func() {
		s.cancel()
		<-s.done
	})
}

func (s *polledSource) refreshLoop(ctx context.Context, every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.refresh(ctx)
		}
	}
}

// refresh reads the source once and swaps the new set in; on failure the
// last good set stays, with one warning per distinct error rather than one
// per interval.
func (s *polledSource) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, sourceReadTimeout)
	set, err := s.read(rctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return // closing: the read was cut short, not broken
		}
		if msg := err.Error(); msg != s.failing {
			s.failing = msg
			s.log.Warn().Err(err).Str("source", s.what).Msg("env source unreadable; keeping the last names read")
		}
		return
	}
	if s.failing != "" {
		s.failing = ""
		s.log.Info().Str("source", s.what).Msg("env source readable again")
	}
	old := *s.names.Load()
	s.names.Store(&set)
	added, removed := diffCount(old, set)
	if added > 0 || removed > 0 {
		s.log.Info().Str("source", s.what).Int("envs", len(set)).Int("added", added).Int("removed", removed).
			Msg("env source changed")
	}
}

func diffCount(old, cur map[string]struct{}) (added, removed int) {
	for n := range cur {
		if _, ok := old[n]; !ok {
			added++
		}
	}
	for n := range old {
		if _, ok := cur[n]; !ok {
			removed++
		}
	}
	return added, removed
}
