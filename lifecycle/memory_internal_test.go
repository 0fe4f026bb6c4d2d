package lifecycle

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/procfs"
)

// memTree writes a fake /proc (meminfo, and self -> 42 with its cgroup
// file) and a cgroup tree, each file given by its path under root.
func memTree(t *testing.T, files map[string]string) (procfs.FS, string) {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("42", filepath.Join(root, "proc", "self")); err != nil {
		t.Fatal(err)
	}
	fs, err := procfs.NewFS(filepath.Join(root, "proc"))
	if err != nil {
		t.Fatal(err)
	}
	return fs, filepath.Join(root, "cgroup")
}

const testMeminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\nBuffers:          100000 kB\n"

func TestAvailableMemory(t *testing.T) {
	const meminfoBytes = 8000000 << 10
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"no cgroup limit (v2 max)", map[string]string{
			"proc/meminfo":              testMeminfo,
			"proc/42/cgroup":            "0::/system.slice/envgate.service\n",
			"cgroup/cgroup.controllers": "cpu memory pids\n",
			"cgroup/system.slice/envgate.service/memory.max":     "max\n",
			"cgroup/system.slice/envgate.service/memory.current": "1000\n",
		}, meminfoBytes},
		{"v2 limit below MemAvailable, inactive file pages count as free", map[string]string{
			"proc/meminfo":              testMeminfo,
			"proc/42/cgroup":            "0::/gw\n",
			"cgroup/cgroup.controllers": "cpu memory pids\n",
			"cgroup/gw/memory.max":      "1073741824\n",
			"cgroup/gw/memory.current":  "536870912\n",
			"cgroup/gw/memory.stat":     "anon 400000000\nfile 136870912\ninactive_file 134217728\nactive_file 2653184\n",
		}, 1<<30 - (1<<29 - 1<<27)},
		{"v2 limit above MemAvailable", map[string]string{
			"proc/meminfo":              testMeminfo,
			"proc/42/cgroup":            "0::/gw\n",
			"cgroup/cgroup.controllers": "memory\n",
			"cgroup/gw/memory.max":      "68719476736\n",
			"cgroup/gw/memory.current":  "1000\n",
		}, meminfoBytes},
		{"v2 usage past the limit", map[string]string{
			"proc/meminfo":              testMeminfo,
			"proc/42/cgroup":            "0::/gw\n",
			"cgroup/cgroup.controllers": "memory\n",
			"cgroup/gw/memory.max":      "1000\n",
			"cgroup/gw/memory.current":  "5000\n",
		}, 0},
		{"v1 memory hierarchy", map[string]string{
			"proc/meminfo":                           testMeminfo,
			"proc/42/cgroup":                         "12:pids:/gw\n4:cpu,cpuacct:/gw\n3:memory:/gw\n1:name=systemd:/gw\n",
			"cgroup/memory/gw/memory.limit_in_bytes": "2147483648\n",
			"cgroup/memory/gw/memory.usage_in_bytes": "1073741824\n",
			"cgroup/memory/gw/memory.stat":           "cache 10\ntotal_inactive_file 1048576\n",
		}, 1<<31 - (1<<30 - 1<<20)},
		{"v1 no limit (a huge number)", map[string]string{
			"proc/meminfo":                           testMeminfo,
			"proc/42/cgroup":                         "3:memory:/gw\n",
			"cgroup/memory/gw/memory.limit_in_bytes": "9223372036854771712\n",
			"cgroup/memory/gw/memory.usage_in_bytes": "1000\n",
		}, meminfoBytes},
		{"v1 in a cgroup namespace: the mount's root is our group", map[string]string{
			"proc/meminfo":                        testMeminfo,
			"proc/42/cgroup":                      "3:memory:/gw\n",
			"cgroup/memory/memory.limit_in_bytes": "1048576\n",
			"cgroup/memory/memory.usage_in_bytes": "524288\n",
		}, 524288},
		{"a v2 line without a cgroup2 mount", map[string]string{
			"proc/meminfo":             testMeminfo,
			"proc/42/cgroup":           "0::/gw\n",
			"cgroup/gw/memory.max":     "1000\n",
			"cgroup/gw/memory.current": "10\n",
		}, meminfoBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cg := memTree(t, tc.files)
			got, err := availableMemory(fs, cg)
			if err != nil || got != tc.want {
				t.Fatalf("availableMemory = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestAvailableMemoryWithoutMemAvailable(t *testing.T) {
	fs, cg := memTree(t, map[string]string{
		"proc/meminfo":   "MemTotal:       16000000 kB\nMemFree:         1000000 kB\n",
		"proc/42/cgroup": "0::/\n",
	})
	if got, err := availableMemory(fs, cg); err == nil {
		t.Fatalf("availableMemory = %d without MemAvailable; want an error", got)
	}
}

// TestSystemAvailableMemory reads this machine's figures: a positive
// amount, no more than MemTotal.
func TestSystemAvailableMemory(t *testing.T) {
	avail, err := SystemAvailableMemory()
	if err != nil {
		t.Fatal(err)
	}
	mi, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	info, err := mi.Meminfo()
	if err != nil {
		t.Fatal(err)
	}
	if avail <= 0 || uint64(avail) > *info.MemTotalBytes {
		t.Fatalf("SystemAvailableMemory = %d; MemTotal %d", avail, *info.MemTotalBytes)
	}
}

// BenchmarkSystemAvailableMemory: admission reads it twice per cold start
// when limits.min_available_memory is set, and the reaper once a tick.
func BenchmarkSystemAvailableMemory(b *testing.B) {
	for b.Loop() {
		if _, err := SystemAvailableMemory(); err != nil {
			b.Fatal(err)
		}
	}
}
