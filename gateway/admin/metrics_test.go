package admin

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches h's metrics and parses them as Prometheus does.
func scrape(t *testing.T, h *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	w := httptest.NewRecorder()
	h.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(w.Body.String()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, w.Body)
	}
	return fams
}

// value returns the value of the metric of family name whose labels
// include want (name=value pairs), or -1.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(want); i += 2 {
			ok := false
			for _, l := range m.Label {
				ok = ok || (l.GetName() == want[i] && l.GetValue() == want[i+1])
			}
			if !ok {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	m := NewMetrics("v1", "abc")
	m.WatchEnvs(newFake(t))
	m.Request(200, time.Millisecond)
	m.Request(204, time.Millisecond)
	m.Request(503, time.Second)
	m.Request(0, 0)
	m.Started("web", lifecycle.StartPhases{Wait: time.Millisecond, Setup: 2 * time.Millisecond, Boot: 100 * time.Millisecond})
	m.StartFailed("web", true)
	m.Refused("web", "max_envs")
	m.Refused("web", "something new")
	m.Stopped("web", lifecycle.StopIdle)
	m.Stopped("web", "unheard of")
	fams := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"envgate_requests_total", []string{"code", "2xx"}, 2},
		{"envgate_requests_total", []string{"code", "5xx"}, 1},
		{"envgate_requests_total", []string{"code", "none"}, 1},
		{"envgate_request_duration_seconds", nil, 4},
		{"envgate_env_starts_total", nil, 1},
		{"envgate_env_start_duration_seconds", nil, 1},
		{"envgate_env_start_phase_seconds", []string{"phase", "boot"}, 1},
		{"envgate_env_start_failures_total", []string{"kind", "timeout"}, 1},
		{"envgate_admission_rejections_total", []string{"limit", "max_envs"}, 1},
		{"envgate_admission_rejections_total", []string{"limit", "other"}, 1},
		{"envgate_env_stops_total", []string{"cause", "idle"}, 1},
		{"envgate_env_stops_total", []string{"cause", "other"}, 1},
		{"envgate_envs", []string{"state", "ready"}, 1},
		{"envgate_envs", []string{"state", "failed"}, 0},
		{"envgate_in_flight_requests", nil, 1},
		{"envgate_env_memory_bytes", []string{"env", "web"}, 1 << 20},
		{"envgate_env_requests_total", []string{"env", "web"}, 7},
		{"envgate_build_info", []string{"version", "v1"}, 1},
	} {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Error("no Go runtime or process metrics")
	}
}

// TestRequestObserveAllocatesNothing: the request path's share.
func TestRequestObserveAllocatesNothing(t *testing.T) {
	m := NewMetrics("v", "r")
	if n := testing.AllocsPerRun(1000, func() { m.Request(200, time.Millisecond) }); n != 0 {
		t.Errorf("Request allocates %v times", n)
	}
}

func BenchmarkRequestObserve(b *testing.B) {
	m := NewMetrics("v", "r")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Request(200, 150*time.Microsecond)
		}
	})
}

// TestGrafanaDashboardNamesExist: every envgate_ metric the dashboard in
// deploy/ queries is one the gateway exports.
func TestGrafanaDashboardNamesExist(t *testing.T) {
	b, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	m := NewMetrics("v", "r")
	m.WatchEnvs(newFake(t))
	fams := scrape(t, m)
	name := regexp.MustCompile(`\b(envgate|go|process)_[a-z_]+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, full := range name.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(full, "_bucket"), "_count"), "_sum")
				if fams[base] == nil {
					t.Errorf("panel %q queries %s, which the gateway does not export", p.Title, full)
				}
				n++
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d metric names found in the dashboard", n)
	}
}
