package lifecycle

import (
	"bytes"
	"strings"
	"sync"
)

// Output limits.
const (
	outputBufferBytes = 64 << 10 // per-env tail kept for error pages
)

// Output is an env's output: the newest outputBufferBytes of what its dev
// server (and its prepare steps) wrote, line by line, for error and
// waiting pages. Memory stays bounded however much the server writes. The
// zero value is empty and ready to use; its memory is allocated at the
// first write, so an env that never ran costs next to nothing.
type Output struct {
	mu  sync.Mutex
	buf []byte // guarded by mu; ring of the newest bytes
	pos int    // guarded by mu; next write position once full
	all bool   // guarded by mu; buf has wrapped
	seq uint64 // guarded by mu; lines written, for waiters
}

// outputBufferFirst is the buffer's first allocation. It doubles as
// output comes, up to outputBufferBytes: most dev servers say a few lines
// and then nothing, and a thousand envs each holding 64 KiB for them was
// most of the gateway's heap.
const outputBufferFirst = 512

// WriteLine adds one line (without its newline).
func (b *Output) WriteLine(line []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	for _, p := range [][]byte{line, {'\n'}} {
		for len(p) > 0 {
			if !b.all && len(b.buf) == cap(b.buf) {
				// Full but not yet at its bound: grow (b.all is set
				// only at the bound).
				nb := make([]byte, len(b.buf), min(max(2*cap(b.buf), outputBufferFirst), outputBufferBytes))
				copy(nb, b.buf)
				b.buf = nb
			}
			if !b.all {
				n := min(len(p), cap(b.buf)-len(b.buf))
				b.buf = append(b.buf, p[:n]...)
				p = p[n:]
				if len(b.buf) == outputBufferBytes {
					b.all = true
					b.pos = 0
				}
				continue
			}
			n := copy(b.buf[b.pos:], p)
			p = p[n:]
			b.pos = (b.pos + n) % len(b.buf)
		}
	}
}

// Tail returns up to n of the newest complete lines.
func (b *Output) Tail(n int) []string {
	b.mu.Lock()
	var data []byte
	if b.all {
		data = append(append(data, b.buf[b.pos:]...), b.buf[:b.pos]...)
		// The oldest line is probably cut: drop it.
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	} else {
		data = append(data, b.buf...)
	}
	b.mu.Unlock()
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// LogTimeFormat is the time at the start of each line of an env's log
// file (LogKeeper): UTC, fixed width, so that lines sort and compare as
// strings.
const LogTimeFormat = "2006-01-02T15:04:05.000Z"
