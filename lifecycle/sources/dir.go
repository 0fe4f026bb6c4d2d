package sources

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/rs/zerolog"
)

// NewDir returns a Source that allows the names of path's subdirectories
// (symlinks to directories count) that are env names (envname.Valid);
// other entries are ignored. It reads path now, failing if it cannot,
// then again every refresh (default DefaultRefresh) in the background
// until Close or ctx ends; a failed re-read keeps the last good set and
// logs a warning.
func NewDir(ctx context.Context, path string, refresh time.Duration, log zerolog.Logger) (Source, error) {
	s, err := newDir(ctx, path, refresh, log, nil)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return s, nil
}

func newDir(ctx context.Context, path string, refresh time.Duration, log zerolog.Logger, onRefresh func(error)) (*polled, error) {
	return newPolled(ctx, "directory "+path, refresh, log, func(context.Context) (map[string]struct{}, error) {
		return readDirNames(path)
	}, onRefresh)
}

func readDirNames(path string) (map[string]struct{}, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	set := make(map[string]struct{}, len(entries))
	for _, de := range entries {
		if !envname.Valid(de.Name()) {
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
