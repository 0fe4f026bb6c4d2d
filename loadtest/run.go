package loadtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxCheckBody is how much of a body the --expect-body check looks at; the
// rest is read and discarded.
const maxCheckBody = 1 << 20

// Run executes the load described by o and returns its report. When progress
// is not nil, a live status line is written to it once per second (with \r
// and an erase-line sequence: give it a terminal) and a final line at the end.
//
// Run returns an error only when the run cannot start (invalid options, an
// unreadable CA file); failed requests are counted in the report. Cancelling
// ctx ends the run early: requests in flight are abandoned and not counted,
// and the report covers what finished, with Interrupted set.
func Run(ctx context.Context, o Options, progress io.Writer) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	hosts, err := newHostSet(&o)
	if err != nil {
		return nil, err
	}
	conns := o.Concurrency
	if o.openLoop() {
		conns = o.MaxInflight
	}
	rt := o.transport
	if rt == nil {
		tr, err := newTransport(&o, conns)
		if err != nil {
			return nil, err
		}
		defer tr.CloseIdleConnections()
		rt = tr
	}

	r := &runner{o: &o, hosts: hosts, rt: rt, header: o.Header}
	if r.header == nil {
		r.header = http.Header{}
	}
	if len(o.Body) > 0 {
		body := o.Body
		r.getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	nShards := 4 * runtime.GOMAXPROCS(0)
	if !o.openLoop() {
		nShards = min(nShards, o.Concurrency)
	}
	r.shards = make([]*shard, nShards)
	for i := range r.shards {
		r.shards[i] = newShard()
	}

	cpu0 := cpuTime()
	r.start = time.Now()
	stopProgress := r.startProgress(progress)
	var ph phases
	if o.openLoop() {
		ph = r.runOpen(ctx)
	} else {
		ph = r.runClosed(ctx)
	}
	stopProgress()
	rep := r.report(ph, cpuTime()-cpu0)
	rep.Interrupted = ctx.Err() != nil
	return rep, nil
}

// runner is the state of one run shared by its goroutines.
type runner struct {
	o       *Options
	hosts   *hostSet
	rt      http.RoundTripper
	header  http.Header // shared by all requests: RoundTrip must not modify it
	getBody func() (io.ReadCloser, error)
	shards  []*shard
	start   time.Time
	fresh   atomic.Int64 // never-seen hosts handed out so far (hotcold)

	// Live counters for the progress line, warm-up included.
	done, failed, inflight atomic.Int64
}

// phases are the timestamps and counts the report is computed from, as
// offsets from runner.start.
type phases struct {
	end       time.Duration // the last request finished
	lastSend  time.Duration // the last measured request was handed to a worker (open loop)
	scheduled int64         // measured requests on the timeline (open loop)
	dropped   int64         // of those, not queued: queue full (open loop)
	capHit    bool          // every worker was busy at --max-inflight (open loop)
}

// result is what send observed about one request.
type result struct {
	class    errClass
	status   int
	cold     bool
	timed    bool // a response or a timeout: its latency means something
	canceled bool // the run was interrupted: the request counts nowhere
}

// ticket is one request on the open-loop timeline.
type ticket struct {
	at       time.Duration // intended start, from runner.start
	host     int
	measured bool
}

func (r *runner) runOpen(ctx context.Context) phases {
	o := r.o
	due := func(k int64) time.Duration { return time.Duration(float64(k) * float64(time.Second) / o.Rate) }
	interval := due(1)
	// The queue holds requests that are due while every worker is busy; they
	// start late but their latency still counts from their due time. It holds
	// about a second of traffic, so a dead server costs bounded memory, and a
	// request that waits in it longer than Timeout is given up (backlog).
	queue := make(chan ticket, min(max(o.MaxInflight, int(o.Rate)), 1<<20))
	var (
		idle atomic.Int64
		wg   sync.WaitGroup
		live int
	)
	spawn := func() {
		id := live
		live++
		wg.Go(func() { r.openWorker(ctx, id, queue, &idle) })
	}
	for range min(o.MaxInflight, 4) {
		spawn()
	}

	var ph phases
	p := newPicker(o.dist, len(r.hosts.fixed), o.Seed, &r.fresh)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
schedule:
	for k := int64(0); ctx.Err() == nil; k++ {
		at := due(k)
		measured := at >= o.Warmup
		if o.Requests > 0 {
			if measured && ph.scheduled >= o.Requests {
				break
			}
		} else if at >= o.Warmup+o.Duration {
			break
		}
		if wait := at - time.Since(r.start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				break schedule
			case <-timer.C:
			}
		}
		tk := ticket{at: at, host: p.pick(), measured: measured}
		if measured {
			ph.scheduled++
			ph.lastSend = time.Since(r.start)
		}
		select {
		case queue <- tk:
			if int64(len(queue)) > idle.Load() {
				if live < o.MaxInflight {
					spawn()
				} else {
					ph.capHit = true
				}
			}
		default:
			ph.capHit = true
			r.failed.Add(1)
			if measured {
				ph.dropped++
			}
		}
	}
	close(queue)
	wg.Wait() // queued and in-flight requests finish, each within Timeout
	ph.end = time.Since(r.start)
	if ph.scheduled > 0 {
		ph.lastSend += interval // the last request owns one interval of the schedule
	}
	r.shards[0].addBacklog(ph.dropped)
	return ph
}

func (r *runner) openWorker(ctx context.Context, id int, queue <-chan ticket, idle *atomic.Int64) {
	sh := r.shards[id%len(r.shards)]
	var buf bytes.Buffer
	for {
		idle.Add(1)
		tk, ok := <-queue
		idle.Add(-1)
		if !ok {
			return
		}
		if ctx.Err() != nil {
			continue // interrupted: drain without sending
		}
		started := time.Since(r.start)
		if late := started - tk.at; late >= r.o.Timeout {
			// It waited for a worker (at --max-inflight) longer than it
			// would have been allowed to run: give up on it, but keep the
			// wait it has already suffered.
			r.failed.Add(1)
			if tk.measured {
				sh.record(outcome{latency: late, startLag: late, class: classBacklog, timed: true})
			}
			continue
		}
		res := r.send(ctx, &buf, tk.host)
		if res.canceled || !tk.measured {
			continue
		}
		sh.record(outcome{
			latency:  time.Since(r.start) - tk.at,
			startLag: started - tk.at,
			cold:     res.cold, class: res.class, status: res.status, timed: res.timed,
		})
	}
}

func (r *runner) runClosed(ctx context.Context) phases {
	var (
		wg      sync.WaitGroup
		claimed atomic.Int64
	)
	for id := range r.o.Concurrency {
		wg.Go(func() { r.closedWorker(ctx, id, &claimed) })
	}
	wg.Wait()
	end := time.Since(r.start)
	return phases{end: end, lastSend: end}
}

func (r *runner) closedWorker(ctx context.Context, id int, claimed *atomic.Int64) {
	o := r.o
	sh := r.shards[id%len(r.shards)]
	p := newPicker(o.dist, len(r.hosts.fixed), o.Seed+uint64(id), &r.fresh)
	var buf bytes.Buffer
	for ctx.Err() == nil {
		started := time.Since(r.start)
		measured := started >= o.Warmup
		if measured {
			if o.Requests > 0 {
				if claimed.Add(1) > o.Requests {
					return
				}
			} else if started >= o.Warmup+o.Duration {
				return
			}
		}
		res := r.send(ctx, &buf, p.pick())
		if res.canceled || !measured {
			continue
		}
		sh.record(outcome{
			latency:  time.Since(r.start) - started,
			startLag: -1,
			cold:     res.cold, class: res.class, status: res.status, timed: res.timed,
		})
	}
}

// send issues one request to host index idx and classifies what came back.
// buf is the caller's scratch space for the body check.
func (r *runner) send(ctx context.Context, buf *bytes.Buffer, idx int) (res result) {
	r.inflight.Add(1)
	defer func() {
		r.inflight.Add(-1)
		if !res.canceled {
			r.done.Add(1)
			if res.class != classOK {
				r.failed.Add(1)
			}
		}
	}()
	t, first, err := r.hosts.get(idx)
	if err != nil {
		return result{class: classOther}
	}
	res.cold = first

	rctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	resp, err := r.rt.RoundTrip(r.newRequest(rctx, t))
	if err != nil {
		return r.failure(ctx, res, err)
	}
	res.status = resp.StatusCode
	res.timed = true
	if resp.Header.Get(ColdStartHeader) != "" {
		res.cold = true
	}
	err = r.readBody(resp, buf)
	resp.Body.Close()
	switch {
	case err != nil:
		return r.failure(ctx, res, err)
	case resp.StatusCode >= 400:
		res.class = classStatus
	case resp.StatusCode < 300 && !r.routedOK(resp, t, buf):
		res.class = classMisroute
	}
	return res
}

func (r *runner) failure(ctx context.Context, res result, err error) result {
	if ctx.Err() != nil {
		res.canceled = true
		return res
	}
	res.class = classify(err)
	res.timed = res.class == classTimeout
	return res
}

func (r *runner) newRequest(ctx context.Context, t *target) *http.Request {
	req := &http.Request{
		Method:     r.o.Method,
		URL:        t.url, // shared: RoundTrip must not modify the request
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     r.header,
		Host:       t.host,
	}
	if r.getBody != nil {
		req.Body, _ = r.getBody()
		req.GetBody = r.getBody
		req.ContentLength = int64(len(r.o.Body))
	}
	return req.WithContext(ctx)
}

func (r *runner) readBody(resp *http.Response, buf *bytes.Buffer) error {
	if r.hosts.expectT != nil && resp.StatusCode < 300 {
		buf.Reset()
		if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxCheckBody)); err != nil {
			return err
		}
	}
	_, err := io.Copy(io.Discard, resp.Body)
	return err
}

// routedOK reports whether a response names the env it was meant for.
func (r *runner) routedOK(resp *http.Response, t *target, body *bytes.Buffer) bool {
	switch {
	case r.o.NoCheck:
		return true
	case r.hosts.expectT != nil:
		return bytes.Contains(body.Bytes(), t.expect)
	}
	return strings.EqualFold(resp.Header.Get(r.o.ExpectHeader), t.env)
}
