package webhook

import (
	"bytes"
	"container/list"
	"slices"
	"strings"
	"sync"

	"github.com/envgate/envgate/lifecycle/cluster/sharedfile"
	"github.com/rs/zerolog"
)

// idSet is a bounded set of delivery IDs, the oldest dropped first: in
// this process's memory, and, if file is set, in that file too, which
// holds the newest max IDs accepted by every process that shares it (a
// restarted gateway, the nodes of a cluster).
//
// The file is the only copy of the shared set: each delivery reads it
// and, if its ID is new, writes it back with the ID added, in one
// sharedfile.Update, so two nodes that get the same delivery at once
// accept it once, and no node's records overwrite another's. The memory
// set remembers what this process saw: with no file, or when the file
// cannot be read or written (logged), replays are refused within this
// process's life only.
type idSet struct {
	max  int
	file string // "" for memory only
	log  zerolog.Logger

	mu    sync.Mutex
	order *list.List               // guarded by mu; front is newest
	ids   map[string]*list.Element // guarded by mu
}

// newIDSet returns a set of the newest max IDs, kept in file if it is
// not "". A file it cannot read is logged.
func newIDSet(max int, file string, log zerolog.Logger) *idSet {
	s := &idSet{max: max, file: file, log: log, order: list.New(), ids: make(map[string]*list.Element)}
	if file != "" {
		if _, err := sharedfile.Read(file); err != nil {
			log.Error().Err(err).Str("file", file).Msg("webhook: the delivery IDs seen before are unreadable; replays of them will be taken")
		}
	}
	return s
}

// add records id and reports whether it was new: neither in memory nor
// in the file.
func (s *idSet) add(id string) bool {
	s.mu.Lock()
	_, known := s.ids[id]
	s.mu.Unlock()
	if known {
		return false
	}
	// An ID with a line break would be two lines: memory only.
	if s.file != "" && !strings.ContainsAny(id, "\r\n") {
		var err error
		known, err = s.addToFile(id)
		if err != nil {
			s.log.Error().Err(err).Str("file", s.file).Str("delivery", id).Msg("webhook: check and record a delivery ID; a replay of it to another node or after a restart would be taken")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return false // added meanwhile by another goroutine
	}
	s.ids[id] = s.order.PushFront(id)
	if s.order.Len() > s.max {
		old := s.order.Back()
		s.order.Remove(old)
		delete(s.ids, old.Value.(string))
	}
	return !known
}

// addToFile adds id to the file unless it holds it already, which it
// reports. The file holds one ID a line, oldest first; the oldest are
// dropped beyond max.
func (s *idSet) addToFile(id string) (known bool, err error) {
	err = sharedfile.Update(s.file, func(old []byte) ([]byte, error) {
		ids := strings.FieldsFunc(string(old), func(r rune) bool { return r == '\n' })
		ids = ids[max(0, len(ids)-s.max):]
		if slices.Contains(ids, id) {
			known = true
			return old, nil
		}
		ids = append(ids, id)
		var b bytes.Buffer
		for _, x := range ids[max(0, len(ids)-s.max):] { // the oldest go
			b.WriteString(x)
			b.WriteByte('\n')
		}
		return b.Bytes(), nil
	})
	return known, err
}
