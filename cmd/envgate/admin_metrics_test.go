package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest"
	"github.com/envgate/envgate/netns/netnstest/wait"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricValue returns the value (histograms: the sample count) of the
// series of family name whose labels include want (name, value pairs),
// or -1 if there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
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

func parseMetrics(t *testing.T, body io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return fams
}

// TestMetricsMove: the metrics of a running gateway, on its socket and on
// admin.metrics, parse with expfmt and move as they should after a cold
// start, a start refused at max_envs, and an idle reap.
func TestMetricsMove(t *testing.T) {
	netnstest.RequireRoot(t)
	metricsAddr := "127.0.0.1:" + strconv.Itoa(netnstest.LoopbackPort(t))
	instance, cfg, addr := testInstance(t, 6, `limits: {max_envs: 1}
admin: {metrics: "`+metricsAddr+`"}
templates:
  - name: demo
    match: "*"
    command: ["{{.Self}}", "demo-server", "--listen", ":{{.Port}}", "--name", "{{.Name}}", "--data-dir", "{{.DataDir}}"]
    port: 3000
    ready: {http: /healthz, timeout: 30s}
    idle_timeout: 1s
    allow_root: true
`)
	defer netnstest.CheckClean(t, instance)
	g := startServe(t, cfg, addr)
	defer g.stop(t, syscall.SIGTERM)
	c, err := (&globalFlags{config: cfg}).adminClient()
	if err != nil {
		t.Fatal(err)
	}
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := c.Do(context.Background(), "GET", "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return parseMetrics(t, resp.Body)
	}
	expect := func(fams map[string]*dto.MetricFamily, name string, want float64, labels ...string) {
		t.Helper()
		if got := metricValue(fams, name, labels...); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}

	m := scrape()
	expect(m, "envgate_env_starts_total", 0)
	expect(m, "envgate_envs", 0, "state", "ready")
	if m["go_goroutines"] == nil || m["process_resident_memory_bytes"] == nil {
		t.Error("no Go runtime or process metrics")
	}

	// A cold start.
	if code, _, _ := g.get(t, "alpha.localhost", "/"); code != 200 {
		t.Fatalf("alpha: %d", code)
	}
	m = scrape()
	expect(m, "envgate_env_starts_total", 1)
	expect(m, "envgate_env_start_duration_seconds", 1)
	for _, p := range []string{"wait", "setup", "boot"} {
		expect(m, "envgate_env_start_phase_seconds", 1, "phase", p)
	}
	expect(m, "envgate_requests_total", 1, "code", "2xx")
	expect(m, "envgate_envs", 1, "state", "ready")
	expect(m, "envgate_env_requests_total", 1, "env", "alpha")
	// Bytes over the client connection: at least the request head, and
	// the response's head and page. The gateway counts a write when it
	// returns, which may be after the client has the response: wait.
	var recv, sent float64
	if !wait.Until(10*time.Second, func() bool {
		bm := scrape()
		recv, sent = metricValue(bm, "envgate_client_bytes_total", "direction", "received"), metricValue(bm, "envgate_client_bytes_total", "direction", "sent")
		return recv >= 30 && sent >= 200
	}) {
		t.Errorf("client bytes received %v, sent %v after a GET of a page", recv, sent)
	}
	expect(m, "envgate_certificate_events_total", 0, "event", "obtained")

	// A start refused: alpha is busy (a slow request), max_envs is 1.
	var wg sync.WaitGroup
	wg.Go(func() { g.get(t, "alpha.localhost", "/slow?ms=1500") })
	waitFor(t, "the slow request to be in flight", func() bool {
		return metricValue(scrape(), "envgate_in_flight_requests") == 1
	})
	if code, _, _ := g.get(t, "beta.localhost", "/"); code != http.StatusServiceUnavailable {
		t.Errorf("beta at max_envs: %d, want 503", code)
	}
	wg.Wait()
	m = scrape()
	expect(m, "envgate_admission_rejections_total", 1, "limit", "max_envs")
	expect(m, "envgate_requests_total", 1, "code", "5xx")
	expect(m, "envgate_requests_total", 2, "code", "2xx")
	expect(m, "envgate_env_starts_total", 1)
	if now := metricValue(m, "envgate_client_bytes_total", "direction", "sent"); now <= sent {
		t.Errorf("client bytes sent did not move with two more answers: %v, then %v", sent, now)
	}

	// The idle reap.
	waitFor(t, "alpha to be reaped", func() bool {
		return metricValue(scrape(), "envgate_env_stops_total", "cause", "idle") == 1
	})
	m = scrape()
	expect(m, "envgate_envs", 0, "state", "ready")
	expect(m, "envgate_env_requests_total", -1, "env", "alpha") // no env label once it stopped

	// The same on admin.metrics, without a token; the API is not there.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m = parseMetrics(t, resp.Body)
	resp.Body.Close()
	expect(m, "envgate_env_stops_total", 1, "cause", "idle")
	if resp, err := http.Get("http://" + metricsAddr + "/v1/envs"); err != nil || resp.StatusCode != 404 {
		t.Errorf("API on admin.metrics: %v %v", err, resp.StatusCode)
	}
}
