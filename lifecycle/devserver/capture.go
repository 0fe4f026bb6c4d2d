package devserver

import (
	"bufio"
	"io"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// Output capture limits.
const (
	maxLineBytes      = 4 << 10 // longer lines are cut
	logLinesPerSecond = 200     // beyond this, lines are counted, not logged
)

// pump reads r line by line into buf and the log until r ends. Lines
// beyond logLinesPerSecond are kept in buf but not logged; a count of the
// suppressed lines is logged once the rate drops.
func pump(r io.Reader, buf *lifecycle.Output, disk *diskLog, log zerolog.Logger, lines chan<- struct{}) {
	br := bufio.NewReaderSize(r, maxLineBytes)
	var (
		windowStart = time.Now()
		inWindow    int
		suppressed  int
	)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			buf.WriteLine(line)
			now := time.Now()
			disk.writeLine(now, line)
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
			disk.close()
			return
		}
	}
}
