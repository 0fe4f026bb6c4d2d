package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

func benchFixture(b *testing.B, cfg lifecycle.Config) *fixture {
	b.Helper()
	if cfg.Limits.MaxQueuedStarts == 0 {
		// These benchmarks time bursts whose starts all wait their turn
		// (200 at once, 100 churners): the default bound, 4 × MaxStarting,
		// would shed most of them, which the shedding tests cover.
		cfg.Limits.MaxQueuedStarts = 1000
	}
	return newFixture(b, cfg)
}

// BenchmarkColdStart measures starts of distinct envs one at a time, with
// and without a warm pool: Lease.Cold (sandbox, spawn, probe until the
// demo answers) and, apart, making a sandbox alone, which is what the
// warm pool saves.
func BenchmarkColdStart(b *testing.B) {
	for _, warm := range []int{0, 4} {
		b.Run(fmt.Sprintf("warm=%d", warm), func(b *testing.B) {
			f := benchFixture(b, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})}, WarmPool: warm})
			var cold, sandbox []time.Duration
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				name := fmt.Sprintf("cold%d", i)
				if warm == 0 {
					b.StopTimer()
					began := time.Now()
					sb, err := f.Net.Create(ctx, "sb"+name)
					if err != nil {
						b.Fatal(err)
					}
					sandbox = append(sandbox, time.Since(began))
					f.Net.Destroy(sb)
					f.NSM.Settle(ctx) // let the kernel finish that namespace's cleanup
					b.StartTimer()
				}
				l, err := f.M.Acquire(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				cold = append(cold, l.Cold)
				l.Release()
				b.StopTimer()
				f.M.Stop(name, "bench") // keep the machine's load flat; lets the pool refill
				b.StartTimer()
			}
			slices.Sort(cold)
			slices.Sort(sandbox)
			b.ReportMetric(float64(lifecycletest.Percentile(cold, 50).Microseconds())/1000, "cold-p50-ms")
			b.ReportMetric(float64(lifecycletest.Percentile(cold, 99).Microseconds())/1000, "cold-p99-ms")
			if warm == 0 {
				b.ReportMetric(float64(lifecycletest.Percentile(sandbox, 50).Microseconds())/1000, "sandbox-p50-ms")
				b.ReportMetric(float64(lifecycletest.Percentile(sandbox, 99).Microseconds())/1000, "sandbox-p99-ms")
			}
		})
	}
}

// BenchmarkBurst200 requests 200 distinct cold envs at once and reports
// the time until all answer.
func BenchmarkBurst200(b *testing.B) {
	f := benchFixture(b, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Timeout: 2 * time.Minute})}})
	for i := range b.N {
		var wg sync.WaitGroup
		var failed atomic.Int64
		began := time.Now()
		for j := range 200 {
			wg.Go(func() {
				l, err := f.M.Acquire(context.Background(), fmt.Sprintf("burst%d-%d", i, j))
				if err != nil {
					failed.Add(1)
					return
				}
				defer l.Release()
				resp, err := http.Get("http://" + l.Addr.String() + "/healthz")
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
		b.ReportMetric(time.Since(began).Seconds(), "s-all-200-answer")
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d of 200 envs failed", n)
		}
		b.StopTimer()
		for j := range 200 {
			f.M.Stop(fmt.Sprintf("burst%d-%d", i, j), "bench")
		}
		b.StartTimer()
	}
}

// BenchmarkWarmGet measures GETs to one warm env through Acquire, with
// and without 100 other envs being started and reaped all the while.
func BenchmarkWarmGet(b *testing.B) {
	for _, reaping := range []bool{false, true} {
		b.Run(fmt.Sprintf("reaping=%v", reaping), func(b *testing.B) {
			hot := lifecycletest.Demo(lifecycletest.DemoOptions{})
			hot.Name, hot.Match = "hot", "hot"
			churn := lifecycletest.Demo(lifecycletest.DemoOptions{Idle: time.Millisecond})
			for _, tp := range []*lifecycle.Template{hot, churn} {
				if err := tp.Prepare(); err != nil {
					b.Fatal(err)
				}
			}
			f := benchFixture(b, lifecycle.Config{Templates: []*lifecycle.Template{hot, churn}, ReapInterval: 10 * time.Millisecond})
			ctx, stop := context.WithCancel(context.Background())
			var churners sync.WaitGroup
			var reaped atomic.Int64
			if reaping {
				for j := range 100 {
					churners.Go(func() {
						for ctx.Err() == nil {
							l, err := f.M.Acquire(ctx, fmt.Sprintf("churn%d", j))
							if err == nil {
								l.Release()
								reaped.Add(1)
							}
							time.Sleep(50 * time.Millisecond) // past the idle timeout: reaped
						}
					})
				}
			}
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			client := &http.Client{Transport: tr}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l, err := f.M.Acquire(context.Background(), "hot")
					if err != nil {
						b.Error(err)
						return
					}
					resp, err := client.Get("http://" + l.Addr.String() + "/healthz")
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					l.Release()
				}
			})
			b.StopTimer()
			stop()
			churners.Wait()
			tr.CloseIdleConnections()
			if reaping {
				b.ReportMetric(float64(reaped.Load()), "churn-starts")
			}
		})
	}
}
