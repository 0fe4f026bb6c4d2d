package lifecycle

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Output limits.
const (
	outputBufferBytes = 64 << 10 // per-env tail kept for error pages
	maxLineBytes      = 4 << 10  // longer lines are cut
	logLinesPerSecond = 200      // beyond this, lines are counted, not logged
)

// outputBuffer keeps the last outputBufferBytes of a dev server's output.
// Memory stays bounded however much the server writes.
type outputBuffer struct {
	mu  sync.Mutex
	buf []byte // guarded by mu; ring of the newest bytes
	pos int    // guarded by mu; next write position once full
	all bool   // guarded by mu; buf has wrapped
	seq uint64 // guarded by mu; lines written, for waiters
	// disk, if set, also gets every line (Config.LogDir); pump writes it
	// and closes it when the output ends.
	disk *diskLog
}

// outputBufferFirst is the buffer's first allocation. It doubles as
// output comes, up to outputBufferBytes: most dev servers say a few lines
// and then nothing, and a thousand envs each holding 64 KiB for them was
// most of the gateway's heap.
const outputBufferFirst = 512

// newOutputBuffer returns an empty buffer. Its memory is allocated at the
// first write, so an env that never ran costs next to nothing.
func newOutputBuffer() *outputBuffer { return &outputBuffer{} }

func (b *outputBuffer) writeLine(line []byte) {
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
func (b *outputBuffer) Tail(n int) []string {
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

// pump reads r line by line into buf and the log until r ends. Lines
// beyond logLinesPerSecond are kept in buf but not logged; a count of the
// suppressed lines is logged once the rate drops.
func pump(r io.Reader, buf *outputBuffer, log zerolog.Logger, lines chan<- struct{}) {
	br := bufio.NewReaderSize(r, maxLineBytes)
	var (
		windowStart = time.Now()
		inWindow    int
		suppressed  int
	)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			buf.writeLine(line)
			now := time.Now()
			buf.disk.writeLine(now, line)
			select {
			case lines <- struct{}{}: // a nil lines blocks: skipped
			default:
			}
			if now.Sub(windowStart) >= time.Second {
				if suppressed > 0 {
					log.Warn().Int("lines", suppressed).Msg("dev server output suppressed (too fast to log)")
				}
				windowStart, inWindow, suppressed = now, 0, 0
			}
			inWindow++
			if inWindow <= logLinesPerSecond {
				log.Info().Str("line", string(line)).Msg("output")
			} else {
				suppressed++
			}
		}
		// Skip the rest of an over-long line.
		for isPrefix && err == nil {
			_, isPrefix, err = br.ReadLine()
		}
		if err != nil {
			if suppressed > 0 {
				log.Warn().Int("lines", suppressed).Msg("dev server output suppressed (too fast to log)")
			}
			// The output has ended (the dev server is gone or handed
			// over): no descriptor is kept for an env that does not run.
			buf.disk.close()
			return
		}
	}
}
