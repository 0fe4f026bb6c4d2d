package loadtest

import (
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms record microseconds from 1µs to an hour with 3 significant
// digits: enough for any latency a run can observe (it can exceed the
// request timeout by the time a request waited to start).
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// shard is one slice of a run's statistics. Workers are spread over a few
// shards rather than each owning one, because an open-loop run may have
// thousands of workers and a histogram is ~200 KB; with a few shards per CPU
// the locks are rarely contended. Shards are merged once, at the end.
type shard struct {
	mu sync.Mutex
	// Guarded by mu:
	all, cold, warm *hdrhistogram.Histogram // latency
	lag             *hdrhistogram.Histogram // start lag (open loop)
	errs            [numClasses]int64       // errs[classOK] counts successes
	status          map[int]int64
}

func newShard() *shard {
	return &shard{all: newHist(), cold: newHist(), warm: newHist(), lag: newHist(), status: map[int]int64{}}
}

// outcome is what one measured request produced.
type outcome struct {
	latency  time.Duration // from intended (open) or actual (closed) start
	startLag time.Duration // actual start - intended start; < 0 when unknown
	cold     bool
	class    errClass
	status   int  // 0 when no response arrived
	timed    bool // latency is meaningful: a response or a timeout
}

func (s *shard) record(o outcome) {
	s.mu.Lock()
	s.errs[o.class]++
	if o.status != 0 {
		s.status[o.status]++
	}
	if o.timed {
		us := clampUS(o.latency)
		_ = s.all.RecordValue(us) // cannot fail: clampUS keeps us in range
		switch {
		case o.class == classBacklog:
			// never sent: neither cold nor warm
		case o.cold:
			_ = s.cold.RecordValue(us)
		default:
			_ = s.warm.RecordValue(us)
		}
	}
	if o.startLag >= 0 {
		_ = s.lag.RecordValue(clampUS(o.startLag))
	}
	s.mu.Unlock()
}

func (s *shard) addBacklog(n int64) {
	s.mu.Lock()
	s.errs[classBacklog] += n
	s.mu.Unlock()
}

func clampUS(d time.Duration) int64 {
	return min(max(int64(d/time.Microsecond), histMin), histMax)
}

// merged is the sum of all shards.
type merged struct {
	all, cold, warm, lag *hdrhistogram.Histogram
	errs                 [numClasses]int64
	status               map[int]int64
}

func mergeShards(shards []*shard) merged {
	m := merged{all: newHist(), cold: newHist(), warm: newHist(), lag: newHist(), status: map[int]int64{}}
	for _, s := range shards {
		s.mu.Lock()
		m.all.Merge(s.all)
		m.cold.Merge(s.cold)
		m.warm.Merge(s.warm)
		m.lag.Merge(s.lag)
		for i, n := range s.errs {
			m.errs[i] += n
		}
		for c, n := range s.status {
			m.status[c] += n
		}
		s.mu.Unlock()
	}
	return m
}

// Percentiles summarises one latency histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func percentilesOf(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: h.TotalCount(),
		Mean:  math.Round(h.Mean()) / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}
