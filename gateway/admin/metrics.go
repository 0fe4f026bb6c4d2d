package admin

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the gateway's Prometheus metrics. It is the lifecycle's
// Observer (starts, refusals, stops) and the gateway's RequestObserver;
// env counts and per-env gauges are read from Envs when scraped. Every
// label has a small fixed set of values, except env, which appears only
// on the per-env gauges of running envs (bounded by limits.max_envs).
type Metrics struct {
	reg *prometheus.Registry

	// The request path: children resolved once, so that a request costs
	// two atomic adds and a histogram observation, no lookup or allocation.
	requests   [6]prometheus.Counter // by status/100; [0]: no status sent
	reqSeconds prometheus.Histogram
	// Bytes clients sent and got, added to by the listeners' connections
	// (gateway.CountBytes) and read at each scrape.
	bytesReceived, bytesSent atomic.Uint64

	certEvents map[string]prometheus.Counter // by certificate event

	starts       prometheus.Counter
	startSeconds prometheus.Histogram
	phaseSeconds [3]prometheus.Observer // wait, setup, boot
	startFails   [2]prometheus.Counter  // error, timeout
	stops        map[string]prometheus.Counter
	refusals     map[string]prometheus.Counter
}

var (
	requestBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	startBuckets   = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	stopCauses     = []string{lifecycle.StopIdle, lifecycle.StopMaxLifetime, lifecycle.StopEvictEnvs,
		lifecycle.StopEvictMemory, lifecycle.StopCrashed, lifecycle.StopOperator, lifecycle.StopOther}
	refusalLimits = []string{"max_envs", "max_starting", "max_queued_starts", "min_available_memory", "other"}
	certEvents    = []string{"obtained", "renewed", "failed"} // certs.CertEvent values
)

// NewMetrics makes the metrics of a gateway of the given build.
func NewMetrics(version, revision string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), stops: map[string]prometheus.Counter{}, refusals: map[string]prometheus.Counter{},
		certEvents: map[string]prometheus.Counter{}}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envgate_build_info", Help: "The running build (always 1).",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision}}, func() float64 { return 1 }))

	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envgate_requests_total",
		Help: "HTTP requests answered by the gateway, by status class (none: no status was sent)."}, []string{"code"})
	f(reqs)
	for i, c := range []string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		m.requests[i] = reqs.WithLabelValues(c)
	}
	m.reqSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "envgate_request_duration_seconds",
		Help: "Time from a request's arrival until the gateway finished answering it (streams and upgrades: until they ended).", Buckets: requestBuckets})
	f(m.reqSeconds)
	for dir, n := range map[string]*atomic.Uint64{"received": &m.bytesReceived, "sent": &m.bytesSent} {
		f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "envgate_client_bytes_total",
			Help:        "Bytes over the gateway's HTTP and HTTPS listeners' connections (heads, bodies, upgraded streams, TLS records), by direction: received from clients or sent to them.",
			ConstLabels: prometheus.Labels{"direction": dir}}, func() float64 { return float64(n.Load()) }))
	}
	certs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envgate_certificate_events_total",
		Help: "Certificates obtained, renewed, and orders or issuances that failed (ACME or the internal CA)."}, []string{"event"})
	f(certs)
	for _, e := range certEvents {
		m.certEvents[e] = certs.WithLabelValues(e)
	}

	m.starts = prometheus.NewCounter(prometheus.CounterOpts{Name: "envgate_env_starts_total", Help: "Env starts that got ready."})
	m.startSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "envgate_env_start_duration_seconds",
		Help: "Time from a start's admission request until the env was ready (the cold-start wait).", Buckets: startBuckets})
	phases := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envgate_env_start_phase_seconds",
		Help:    "Each phase of a start: wait (queue and admission), setup (the gateway's: sandbox, cgroup, spawn), boot (the dev server's, until ready).",
		Buckets: startBuckets}, []string{"phase"})
	fails := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envgate_env_start_failures_total",
		Help: "Env starts that failed, by kind (error or timeout)."}, []string{"kind"})
	stops := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envgate_env_stops_total",
		Help: "Running envs stopped, by cause (idle, max_lifetime, evicted_max_envs, evicted_memory, crashed, operator, other)."}, []string{"cause"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envgate_admission_rejections_total",
		Help: "Env starts refused at capacity, by limit."}, []string{"limit"})
	f(m.starts)
	f(m.startSeconds)
	f(phases)
	f(fails)
	f(stops)
	f(refused)
	for i, p := range []string{"wait", "setup", "boot"} {
		m.phaseSeconds[i] = phases.WithLabelValues(p)
	}
	m.startFails[0], m.startFails[1] = fails.WithLabelValues("error"), fails.WithLabelValues("timeout")
	for _, c := range stopCauses {
		m.stops[c] = stops.WithLabelValues(c)
	}
	for _, l := range refusalLimits {
		m.refusals[l] = refused.WithLabelValues(l)
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Request implements gateway.RequestObserver.
func (m *Metrics) Request(status int, took time.Duration) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	m.requests[c].Inc()
	m.reqSeconds.Observe(took.Seconds())
}

// ByteCounters are the counters gateway.CountBytes adds to: bytes
// received from clients and sent to them.
func (m *Metrics) ByteCounters() (received, sent *atomic.Uint64) {
	return &m.bytesReceived, &m.bytesSent
}

// CertEvent counts a certificate event (certs.Config.OnEvent): obtained,
// renewed or failed; anything else is not counted.
func (m *Metrics) CertEvent(event string) {
	if c, ok := m.certEvents[event]; ok {
		c.Inc()
	}
}

// Started implements lifecycle.Observer.
func (m *Metrics) Started(_ string, p lifecycle.StartPhases) {
	m.starts.Inc()
	m.startSeconds.Observe((p.Wait + p.Setup + p.Boot).Seconds())
	m.phaseSeconds[0].Observe(p.Wait.Seconds())
	m.phaseSeconds[1].Observe(p.Setup.Seconds())
	m.phaseSeconds[2].Observe(p.Boot.Seconds())
}

// StartFailed implements lifecycle.Observer.
func (m *Metrics) StartFailed(_ string, timeout bool) {
	if timeout {
		m.startFails[1].Inc()
	} else {
		m.startFails[0].Inc()
	}
}

// Refused implements lifecycle.Observer.
func (m *Metrics) Refused(_, limit string) {
	c, ok := m.refusals[limit]
	if !ok {
		c = m.refusals["other"]
	}
	c.Inc()
}

// Stopped implements lifecycle.Observer.
func (m *Metrics) Stopped(_, cause string) {
	c, ok := m.stops[cause]
	if !ok {
		c = m.stops[lifecycle.StopOther]
	}
	c.Inc()
}

// WatchEnvs adds the gauges read from envs at each scrape: envs by
// state, requests in flight, and per running env its memory, CPU time,
// requests and in-flight requests.
func (m *Metrics) WatchEnvs(envs Envs) {
	m.reg.MustRegister(&envCollector{envs: envs})
}

var (
	envsDesc      = prometheus.NewDesc("envgate_envs", "Envs the gateway knows of, by state.", []string{"state"}, nil)
	inFlightDesc  = prometheus.NewDesc("envgate_in_flight_requests", "Requests and connections leased to envs now.", nil, nil)
	maxEnvsDesc   = prometheus.NewDesc("envgate_max_envs", "limits.max_envs (0: no cap).", nil, nil)
	envMemDesc    = prometheus.NewDesc("envgate_env_memory_bytes", "A running env's memory (its cgroup's, without reclaimable cache).", []string{"env"}, nil)
	envCPUDesc    = prometheus.NewDesc("envgate_env_cpu_seconds_total", "A running env's CPU time (its cgroup's).", []string{"env"}, nil)
	envReqDesc    = prometheus.NewDesc("envgate_env_requests_total", "Requests and connections a running env got since the gateway started.", []string{"env"}, nil)
	envFlightDesc = prometheus.NewDesc("envgate_env_in_flight_requests", "A running env's requests and connections in flight.", []string{"env"}, nil)
	states        = []lifecycle.State{lifecycle.Stopped, lifecycle.Starting, lifecycle.Ready, lifecycle.Stopping, lifecycle.Failed}
)

type envCollector struct{ envs Envs }

func (c *envCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{envsDesc, inFlightDesc, maxEnvsDesc, envMemDesc, envCPUDesc, envReqDesc, envFlightDesc} {
		ch <- d
	}
}

func (c *envCollector) Collect(ch chan<- prometheus.Metric) {
	var byState [5]int
	var inFlight int64
	for _, d := range c.envs.Details() {
		if int(d.State) < len(byState) {
			byState[d.State]++
		}
		inFlight += d.InFlight
		if d.State != lifecycle.Ready {
			continue // env labels only for running envs: bounded by max_envs
		}
		if d.MemoryBytes >= 0 {
			ch <- prometheus.MustNewConstMetric(envMemDesc, prometheus.GaugeValue, float64(d.MemoryBytes), d.Name)
			ch <- prometheus.MustNewConstMetric(envCPUDesc, prometheus.CounterValue, d.CPUTime.Seconds(), d.Name)
		}
		ch <- prometheus.MustNewConstMetric(envReqDesc, prometheus.CounterValue, float64(d.Requests), d.Name)
		ch <- prometheus.MustNewConstMetric(envFlightDesc, prometheus.GaugeValue, float64(d.InFlight), d.Name)
	}
	for _, s := range states {
		ch <- prometheus.MustNewConstMetric(envsDesc, prometheus.GaugeValue, float64(byState[s]), s.String())
	}
	ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(inFlight))
	ch <- prometheus.MustNewConstMetric(maxEnvsDesc, prometheus.GaugeValue, float64(c.envs.Limits().MaxEnvs))
}
