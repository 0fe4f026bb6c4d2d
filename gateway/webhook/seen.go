package webhook

import (
	"bufio"
	"bytes"
	"container/list"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// idSet is a bounded set of delivery IDs, the oldest dropped first,
// optionally kept in a file: each accepted ID is appended to it, and it is
// rewritten with the set alone when it holds twice the set's size.
type idSet struct {
	max  int
	file string // "" for memory only
	log  zerolog.Logger

	mu       sync.Mutex
	order    *list.List               // guarded by mu; front is newest
	ids      map[string]*list.Element // guarded by mu
	appended int                      // guarded by mu; lines in file beyond the set
}

func newIDSet(max int) *idSet {
	return &idSet{max: max, order: list.New(), ids: make(map[string]*list.Element)}
}

// loadIDSet returns a set holding the newest max IDs of file (if set),
// which it rewrites with them. A file it cannot read or write is logged:
// replays are then refused only within this process's life.
func loadIDSet(max int, file string, log zerolog.Logger) *idSet {
	s := newIDSet(max)
	s.file, s.log = file, log
	if file == "" {
		return s
	}
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Error().Err(err).Str("file", file).Msg("webhook: the delivery IDs seen before are unreadable; replays of them will be taken")
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if id := sc.Text(); id != "" {
			s.add(id)
		}
	}
	s.mu.Lock()
	s.rewriteLocked()
	s.mu.Unlock()
	return s
}

// add records id and reports whether it was new.
func (s *idSet) add(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return false
	}
	s.ids[id] = s.order.PushFront(id)
	if s.order.Len() > s.max {
		old := s.order.Back()
		s.order.Remove(old)
		delete(s.ids, old.Value.(string))
	}
	return true
}

func (s *idSet) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.ids[id]; ok {
		s.order.Remove(e)
		delete(s.ids, id)
	}
}

// keep writes id, added and acted on, to the file.
func (s *idSet) keep(id string) {
	if s.file == "" || strings.ContainsAny(id, "\r\n") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appended >= s.max {
		s.rewriteLocked()
		return
	}
	f, err := os.OpenFile(s.file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		_, err = f.WriteString(id + "\n")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		s.log.Error().Err(err).Str("file", s.file).Msg("webhook: record a delivery ID; a replay after a restart would be taken")
		return
	}
	s.appended++
}

// rewriteLocked replaces the file with the set's IDs, oldest first
// (written to a new file, synced, renamed). s.mu is held.
func (s *idSet) rewriteLocked() {
	var b strings.Builder
	for e := s.order.Back(); e != nil; e = e.Prev() {
		b.WriteString(e.Value.(string))
		b.WriteByte('\n')
	}
	err := os.MkdirAll(filepath.Dir(s.file), 0o700)
	var f *os.File
	if err == nil {
		f, err = os.CreateTemp(filepath.Dir(s.file), filepath.Base(s.file)+".*")
	}
	if err == nil {
		_, werr := f.WriteString(b.String())
		err = errors.Join(werr, f.Sync(), f.Close())
		if err == nil {
			err = os.Rename(f.Name(), s.file)
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}
	if err != nil {
		s.log.Error().Err(err).Str("file", s.file).Msg("webhook: rewrite the delivery IDs seen")
		return
	}
	s.appended = 0
}
