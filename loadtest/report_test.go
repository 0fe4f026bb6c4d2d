package loadtest

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeReport(t *testing.T, r *Report, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// compareRows parses Compare's output into metric -> [a, b, b/a].
func compareRows(out string) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasSuffix(f[0], ":") { // notes after the table
			continue
		}
		n := len(f)
		rows[strings.Join(f[:n-3], " ")] = f[n-3:]
	}
	return rows
}

// TestJSONRoundTripsThroughCompare: a real run's --json output loads back
// into the same report, and Compare reads it: a report against itself is all
// ratios 1, and a changed metric shows its ratio.
func TestJSONRoundTripsThroughCompare(t *testing.T) {
	s := startEnvServer(t, serverConfig{})
	rep := mustRun(t, Options{Addr: s.addr(), Rate: 200, Requests: 100, Envs: 3})

	path := writeReport(t, rep, "a.json")
	loaded, err := LoadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, rep) {
		t.Fatalf("round trip changed the report:\n got %+v\nwant %+v", loaded, rep)
	}

	b := *loaded
	b.ThroughputRPS = 2 * loaded.ThroughputRPS
	b.Latency.Overall.P99 = loaded.Latency.Overall.P99 / 2
	b.Errors = map[string]int64{"misroute": 3}
	bPath := writeReport(t, &b, "b.json")
	loadedB, err := LoadReport(bPath)
	if err != nil {
		t.Fatal(err)
	}

	var same, diff bytes.Buffer
	Compare(loaded, loaded, &same)
	Compare(loaded, loadedB, &diff)
	for name, row := range compareRows(same.String()) {
		if name == "metric" {
			continue
		}
		if row[2] != "1.00" && row[2] != "-" {
			t.Errorf("a vs a: %s ratio %s, want 1.00 or -", name, row[2])
		}
	}
	rows := compareRows(diff.String())
	for name, want := range map[string]string{"throughput /s": "2.00", "overall p99 ms": "0.50", "errors misroute": "inf", "requests": "1.00"} {
		if got := rows[name]; got == nil || got[2] != want {
			t.Errorf("a vs b: %s = %v, want ratio %s\n%s", name, got, want, diff.String())
		}
	}
}

func TestLoadReportErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage.json": "not json",
		"other.json":   `{"hello": "world"}`,
		"future.json":  `{"version": 99}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadReport(path); err == nil {
			t.Errorf("LoadReport(%s): nil error", name)
		}
	}
	if _, err := LoadReport(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("LoadReport of a missing file: nil error")
	}
}

func TestWriteTable(t *testing.T) {
	r := &Report{
		Version:  1,
		Config:   Config{Mode: "open", Rate: 100, Duration: "10s", Warmup: "0s", Method: "GET", Scheme: "http", Addr: "127.0.0.1:80", Protocol: "http/1.1", NumHosts: 3, Hosts: "e{{.I}}.x", Dist: "uniform", Check: "header X-Envgate-Env"},
		Requests: 1000, OK: 990, DurationS: 10, SendRateRPS: 100, ThroughputRPS: 99,
		Latency:             Latencies{Overall: Percentiles{Count: 1000, P50: 1.5, P99: 12.25}},
		Errors:              map[string]int64{"misroute": 10},
		Status:              map[int]int64{200: 1000},
		GeneratorBottleneck: true, GeneratorNote: "the generator could not keep the requested rate",
	}
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"open loop, 100 req/s, 10s", "overall", "12.25", "misroute 10", "200=1000", "GENERATOR BOTTLENECK: the generator could not"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestDiagnose(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         diagInput
		bottleneck bool
		note       string // substring; "" means no note
	}{
		{"kept up", diagInput{openLoop: true, rate: 100, sendRate: 99.9, startLagP99: time.Millisecond, numCPU: 2}, false, ""},
		{"fell behind", diagInput{openLoop: true, rate: 1000, sendRate: 800, numCPU: 2}, true, "sent 800/s of 1000/s"},
		{"started late", diagInput{openLoop: true, rate: 100, sendRate: 100, startLagP99: 50 * time.Millisecond, startLagMax: 80 * time.Millisecond, numCPU: 2}, true, "up to 80ms late"},
		{"server slow", diagInput{openLoop: true, rate: 1000, sendRate: 700, capHit: true, maxInflight: 8, backlog: 5, startLagP99: time.Second, numCPU: 2}, false, "5 were never sent"},
		{"cpu bound", diagInput{cpuCores: 1.92, numCPU: 2, wall: 5 * time.Second}, true, "1.9 of 2 CPUs"},
		{"too short to judge cpu", diagInput{cpuCores: 1.92, numCPU: 2, wall: 50 * time.Millisecond}, false, ""},
		{"closed loop fine", diagInput{cpuCores: 0.5, numCPU: 2}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, note := diagnose(tc.in)
			if b != tc.bottleneck || (tc.note == "") != (note == "") || !strings.Contains(note, tc.note) {
				t.Errorf("diagnose = %v %q, want %v and a note containing %q", b, note, tc.bottleneck, tc.note)
			}
		})
	}
}
