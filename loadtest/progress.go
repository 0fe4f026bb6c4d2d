package loadtest

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// startProgress writes the live status line once per second until the
// returned function is called; that function writes a final line and waits
// for the goroutine to end. With a nil writer it does nothing.
func (r *runner) startProgress(w io.Writer) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := r.done.Load()
				r.writeProgress(w, n-last)
				last = n
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		elapsed := time.Since(r.start).Seconds()
		rate := 0.0
		if elapsed > 0 {
			rate = float64(r.done.Load()) / elapsed
		}
		r.writeProgress(w, int64(rate))
		fmt.Fprintln(w)
	}
}

// writeProgress writes one status line; \r and "erase to end of line" keep
// it on a single terminal row.
func (r *runner) writeProgress(w io.Writer, rate int64) {
	o := r.o
	elapsed := time.Since(r.start)
	phase := ""
	if elapsed < o.Warmup {
		phase = "warm-up  "
	}
	var span string
	if o.Requests > 0 {
		span = fmt.Sprintf("%.1fs  requests %d (%d measured wanted)", elapsed.Seconds(), r.done.Load(), o.Requests)
	} else {
		total := o.Warmup + o.Duration
		span = fmt.Sprintf("%.1fs of %s (%.1fs left)  requests %d",
			elapsed.Seconds(), total, max(total-elapsed, 0).Seconds(), r.done.Load())
	}
	fmt.Fprintf(w, "\r%s%s  rate %d/s  errors %d  in flight %d\x1b[K",
		phase, span, rate, r.failed.Load(), r.inflight.Load())
}
