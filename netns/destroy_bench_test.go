package netns_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// BenchmarkDestroy100 makes 100 sandboxes, destroys them one after
// another, and reports the time that took and the time until the kernel
// had removed all their veths too (Settle).
func BenchmarkDestroy100(b *testing.B) {
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(b), Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	var destroy, settle time.Duration
	for i := range b.N {
		var sbs []*netns.Sandbox
		for j := range 100 {
			sb, err := m.Create(context.Background(), fmt.Sprintf("d%d-%d", i, j))
			if err != nil {
				b.Fatal(err)
			}
			sbs = append(sbs, sb)
		}
		began := time.Now()
		for _, sb := range sbs {
			if err := m.Destroy(sb); err != nil {
				b.Fatal(err)
			}
		}
		destroy += time.Since(began)
		if err := m.Settle(context.Background()); err != nil {
			b.Fatal(err)
		}
		settle += time.Since(began)
	}
	b.ReportMetric(destroy.Seconds()*1000/float64(b.N), "ms-destroy-100")
	b.ReportMetric(settle.Seconds()*1000/float64(b.N), "ms-until-veths-gone")
}

// BenchmarkGC100 makes 100 sandboxes and reports the time GC takes to
// remove them all, as after a crash (on_restart: clean, envgate gc).
func BenchmarkGC100(b *testing.B) {
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(b), Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	var took time.Duration
	for i := range b.N {
		for j := range 100 {
			sb, err := m.Create(context.Background(), fmt.Sprintf("g%d-%d", i, j))
			if err != nil {
				b.Fatal(err)
			}
			sb.Close() // as the crashed process that made it would have
		}
		began := time.Now()
		left, err := m.GC(nil)
		if err != nil || len(left.Namespaces) != 100 || len(left.Links) != 100 {
			b.Fatalf("gc: %d namespaces, %d links, %v; want 100 of each", len(left.Namespaces), len(left.Links), err)
		}
		took += time.Since(began)
	}
	b.ReportMetric(took.Seconds()*1000/float64(b.N), "ms-gc-100")
}

// BenchmarkDestroyAll1000 makes 1,000 sandboxes and destroys them in one
// DestroyAll, as a gateway's shutdown does, with par namespaces deleted
// at once, and reports the time that took and the time until the kernel
// had removed all their veths too (Settle): the kernel's share of a
// shutdown, without dev servers.
func BenchmarkDestroyAll1000(b *testing.B) {
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(b), Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	defer func(p int) { *netns.DestroyParallel = p }(*netns.DestroyParallel)
	for _, par := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("par%d", par), func(b *testing.B) {
			*netns.DestroyParallel = par
			var destroy, settle time.Duration
			for i := range b.N {
				var sbs []*netns.Sandbox
				for j := range 1000 {
					sb, err := m.Create(context.Background(), fmt.Sprintf("p%d-%d-%d", par, i, j))
					if err != nil {
						m.DestroyAll(sbs)
						b.Fatal(err)
					}
					sbs = append(sbs, sb)
				}
				began := time.Now()
				if err := m.DestroyAll(sbs); err != nil {
					b.Fatal(err)
				}
				destroy += time.Since(began)
				if err := m.Settle(context.Background()); err != nil {
					b.Fatal(err)
				}
				settle += time.Since(began)
			}
			b.ReportMetric(destroy.Seconds()*1000/float64(b.N), "ms-destroyall-1000")
			b.ReportMetric(settle.Seconds()*1000/float64(b.N), "ms-until-veths-gone")
		})
	}
}
