package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// BenchmarkReapCost measures what tearing down 100 idle envs costs the
// warm requests of another env, the issue's "warm throughput while the
// reaper is tearing down 100 envs, as a ratio to warm throughput with no
// reaping". Each iteration: start 100 envs; measure closed-loop GETs to
// the hot env for a baseline window; then let the reaper stop all 100
// (their idle timeout passes) and measure the same GETs over exactly the
// teardown window, then once more for a second baseline after it.
// Reported: req/s in the baselines (their mean) and in the teardown
// window, and the ratio.
func BenchmarkReapCost(b *testing.B) {
	hot := lifecycletest.Demo(lifecycletest.DemoOptions{})
	hot.Name, hot.Match = "hot", "hot"
	idle := lifecycletest.Demo(lifecycletest.DemoOptions{Idle: 4 * time.Second})
	for _, tp := range []*lifecycle.Template{hot, idle} {
		if err := tp.Prepare(); err != nil {
			b.Fatal(err)
		}
	}
	f := benchFixture(b, lifecycle.Config{
		Templates:    []*lifecycle.Template{hot, idle},
		ReapInterval: 20 * time.Millisecond,
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func() error {
		l, err := f.M.Acquire(context.Background(), "hot")
		if err != nil {
			return err
		}
		defer l.Release()
		resp, err := client.Get("http://" + l.Addr.String() + "/healthz")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	// load runs 4 closed-loop workers until stop is closed and returns
	// the requests completed.
	load := func(stop <-chan struct{}) int64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := get(); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return n.Load()
	}
	running := func() int {
		n := 0
		for _, in := range f.M.List() {
			if in.Name != "hot" && in.State == lifecycle.Ready {
				n++
			}
		}
		return n
	}
	var baseRate, reapRate []float64
	b.ResetTimer()
	// The timer runs throughout: an iteration takes seconds, so the
	// default -benchtime makes b.N 1 instead of scaling it up.
	for range b.N {
		var wg sync.WaitGroup
		for j := range 100 {
			wg.Go(func() {
				l, err := f.M.Acquire(context.Background(), fmt.Sprintf("idle%d", j))
				if err != nil {
					b.Error(err)
					return
				}
				l.Release()
			})
		}
		wg.Wait()
		if err := get(); err != nil {
			b.Fatal(err)
		}
		// Baseline: the 100 are up, nothing is being torn down yet (their
		// idle timeout has not passed: the window is shorter than it).
		stop := make(chan struct{})
		time.AfterFunc(time.Second, func() { close(stop) })
		began := time.Now()
		n := load(stop)
		baseRate = append(baseRate, float64(n)/time.Since(began).Seconds())
		if running() != 100 {
			b.Fatalf("%d of 100 envs still up after the baseline window; the idle timeout passed too soon", running())
		}
		// The teardown window: from the first stop until none is left.
		wait.For(b, time.Minute, "the first idle env reaped", func() bool { return running() < 100 })
		stop = make(chan struct{})
		began = time.Now()
		go func() {
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for running() > 0 {
				<-tick.C
			}
			close(stop)
		}()
		n = load(stop)
		reapRate = append(reapRate, float64(n)/time.Since(began).Seconds())
		b.Logf("teardown window %v", time.Since(began))
		// A second baseline once the kernel is done too, averaged with
		// the first, so that drift on a shared machine evens out.
		f.NSM.Settle(context.Background())
		stop = make(chan struct{})
		time.AfterFunc(time.Second, func() { close(stop) })
		began = time.Now()
		n = load(stop)
		baseRate[len(baseRate)-1] = (baseRate[len(baseRate)-1] + float64(n)/time.Since(began).Seconds()) / 2
	}
	var base, reap float64
	for i := range baseRate {
		base += baseRate[i]
		reap += reapRate[i]
	}
	b.ReportMetric(base/float64(len(baseRate)), "req/s-idle")
	b.ReportMetric(reap/float64(len(reapRate)), "req/s-reaping")
	b.ReportMetric(reap/base, "ratio")
}
