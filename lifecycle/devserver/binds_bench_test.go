package devserver_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns/netnstest"
)

// BenchmarkResolvConfBind measures what an env's own /etc/resolv.conf
// (the DNS forwarder's, cmd/envgate's envMounts: a file made on the env's
// /tmp, bound read-only over /etc/resolv.conf by its init) adds to a
// cold start, side by side with the same isolated start without it:
// one launcher, whose Mounts gives the bind to envs named "r..." only,
// starts one env of each kind per iteration, by turns in either order.
// It reports each kind's cold-start p50 and the median of the
// iterations' differences (bind − none), in ms. Sub-benchmark "aa" gives
// the bind to neither, the A/A check of the method.
func BenchmarkResolvConfBind(b *testing.B) {
	netnstest.RequireRoot(b)
	binds := true
	ds := devserver.Config{Isolate: true, InitPath: buildInit(b),
		Mounts: func(env string, _ lifecycle.Sandbox) []devserver.BindMount {
			if !binds || !strings.HasPrefix(env, "r") {
				return nil
			}
			return []devserver.BindMount{{Target: "/etc/resolv.conf", Content: "# envgate\nnameserver 192.0.2.53\n"}}
		}}
	f := benchFixture(b, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})}}, ds)
	ctx := context.Background()
	seq := 0
	start := func(kind string) time.Duration {
		seq++ // a fresh env each time
		name := fmt.Sprint(kind, seq)
		l, err := f.M.Acquire(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		cold := l.Cold
		l.Release()
		f.M.Stop(name, "bench")
		return cold
	}
	for _, mode := range []string{"bind", "aa"} {
		b.Run(mode, func(b *testing.B) {
			binds = mode == "bind"
			pairs(b, start)
		})
	}
}

// pairs starts an "r" and an "n" env per iteration, by turns in either
// order, and reports their p50s and the median of their differences.
func pairs(b *testing.B, start func(kind string) time.Duration) {
	var with, without, delta []time.Duration
	for i := 0; b.Loop(); i++ {
		var w, n time.Duration
		if i%2 == 0 {
			w, n = start("r"), start("n")
		} else {
			n, w = start("n"), start("r")
		}
		with, without, delta = append(with, w), append(without, n), append(delta, w-n)
	}
	ms := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(lifecycletest.Percentile(ds, 50).Microseconds()) / 1000
	}
	b.ReportMetric(ms(with), "bind-p50-ms")
	b.ReportMetric(ms(without), "none-p50-ms")
	b.ReportMetric(ms(delta), "delta-p50-ms")
	b.ReportMetric(0, "ns/op")
}
