package admin

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// followPoll is how often a followed log file is checked for new lines
// and rotation. Polling a file costs a stat and a read; inotify would
// save little at this rate and needs a watch per follower.
const followPoll = 200 * time.Millisecond

// logs answers GET /v1/envs/{name}/logs: the env's output as text, one
// line each, prefixed with its UTC time when it comes from the log file.
// Query: tail=N (the last N lines; default all of the current file),
// since=<duration> (lines no older), follow=1 (keep streaming new lines
// until the client goes away).
func (h *Handler) logs(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	tail := 0
	if s := q.Get("tail"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "tail: want a number of lines")
			return
		}
		tail = n
	}
	var cutoff []byte
	if s := q.Get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "since: want a duration such as 10m")
			return
		}
		cutoff = time.Now().Add(-d).UTC().AppendFormat(nil, lifecycle.LogTimeFormat)
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"

	path := h.cfg.Envs.LogFile(name)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if path == "" {
		// No log files: the in-memory tail, without times; no follow.
		n := tail
		if n == 0 {
			n = 1 << 20
		}
		for _, l := range h.cfg.Envs.Tail(name, n) {
			io.WriteString(w, l+"\n")
		}
		return
	}
	rc := http.NewResponseController(w)
	f, _ := os.Open(path)
	var pending []byte // a line without its newline yet
	if f != nil {
		b, _ := io.ReadAll(f)
		lines := selectLines(b, cutoff, tail)
		pending = b[len(b)-len(trailingPartial(b)):]
		w.Write(lines)
	} else if _, err := os.Stat(path); !os.IsNotExist(err) {
		writeError(w, http.StatusInternalServerError, "open log: "+err.Error())
		return
	} else if !follow {
		if _, ok := h.cfg.Envs.Detail(name); !ok {
			writeError(w, http.StatusNotFound, "no logs for env "+name)
		}
		return
	}
	if !follow {
		if f != nil {
			f.Close()
		}
		return
	}
	rc.Flush() // the headers (and what there was), now
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	t := time.NewTicker(followPoll)
	defer t.Stop()
	buf := make([]byte, 32<<10)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		if f == nil || rotated(f, path) {
			nf, err := os.Open(path)
			if err != nil {
				continue // not there yet (or being rotated)
			}
			if f != nil {
				// Lines written to the old file before it was renamed.
				drain(f, w, &pending, buf)
				f.Close()
			}
			f, pending = nf, pending[:0]
		}
		if drain(f, w, &pending, buf) {
			if rc.Flush() != nil {
				return
			}
		}
	}
}

// drain copies f's new complete lines to w, keeping a partial last line
// in pending; it reports whether it wrote anything.
func drain(f *os.File, w io.Writer, pending *[]byte, buf []byte) bool {
	wrote := false
	for {
		n, err := f.Read(buf)
		if n > 0 {
			*pending = append(*pending, buf[:n]...)
			if i := bytes.LastIndexByte(*pending, '\n'); i >= 0 {
				w.Write((*pending)[:i+1])
				*pending = append((*pending)[:0], (*pending)[i+1:]...)
				wrote = true
			}
		}
		if err != nil || n == 0 {
			return wrote
		}
	}
}

// rotated says whether path no longer names f's file (rotation renamed
// it and made a new one) or the file shrank.
func rotated(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	pi, err := os.Stat(path)
	if err != nil {
		return false // renamed, the new one not there yet: keep reading the old
	}
	a, _ := fi.Sys().(*syscall.Stat_t)
	b, _ := pi.Sys().(*syscall.Stat_t)
	if a != nil && b != nil && (a.Ino != b.Ino || a.Dev != b.Dev) {
		return true
	}
	pos, err := f.Seek(0, io.SeekCurrent)
	return err == nil && pi.Size() < pos
}

// trailingPartial is the part of b after its last newline.
func trailingPartial(b []byte) []byte {
	return b[bytes.LastIndexByte(b, '\n')+1:]
}

// selectLines returns the complete lines of b no older than cutoff (a
// time in lifecycle.LogTimeFormat; nil: all), the last tail of them if
// tail > 0.
func selectLines(b, cutoff []byte, tail int) []byte {
	b = b[:len(b)-len(trailingPartial(b))]
	if cutoff != nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		off := 0
		for sc.Scan() {
			l := sc.Bytes()
			if len(l) >= len(cutoff) && bytes.Compare(l[:len(cutoff)], cutoff) >= 0 {
				break
			}
			off += len(l) + 1
		}
		b = b[min(off, len(b)):]
	}
	if tail > 0 {
		i := len(b)
		for n := 0; n < tail && i > 0; n++ {
			j := bytes.LastIndexByte(b[:i-1], '\n')
			i = j + 1
			if j < 0 {
				i = 0
				break
			}
		}
		b = b[i:]
	}
	return b
}
