package devserver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/envgate/envgate/lifecycle"
)

// BenchmarkNewCgroup makes and removes an env cgroup (no limits), as a
// start and a stop do.
func BenchmarkNewCgroup(b *testing.B) {
	parent := fmt.Sprintf("envgate-test/bench-%d", os.Getpid())
	b.Cleanup(func() {
		for _, c := range []string{"memory", "cpu", "pids", ""} {
			os.Remove(filepath.Join(cgroupMount, c, parent))
			os.Remove(filepath.Join(cgroupMount, c, "envgate-test"))
		}
	})
	for i := range b.N {
		cg, err := newCgroup(parent, fmt.Sprintf("e%d", i), lifecycle.Resources{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := cg.remove(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
