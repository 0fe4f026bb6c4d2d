package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ReportVersion is the version of the JSON report format.
const ReportVersion = 1

// Report is the outcome of a run. Its JSON form is a contract shared with
// Compare and the benchmark scripts: add fields, do not rename them.
// Latencies are in milliseconds, durations in seconds, rates per second.
type Report struct {
	Version     int       `json:"version"`
	Config      Config    `json:"config"`
	Started     time.Time `json:"started"`
	Interrupted bool      `json:"interrupted,omitempty"`

	// DurationS is the measured part of the run: from the end of the warm-up
	// to the last response.
	DurationS float64 `json:"duration_s"`
	// SendDurationS is the part in which requests were sent; in the open
	// loop the schedule's own length when the generator kept up.
	SendDurationS float64 `json:"send_duration_s"`
	// Scheduled counts the requests the open-loop timeline laid out after the
	// warm-up; Requests those that were sent (Scheduled minus backlog).
	Scheduled int64 `json:"scheduled,omitempty"`
	Requests  int64 `json:"requests"`
	OK        int64 `json:"ok"`
	// SendRateRPS is requests laid out (open loop) or sent (closed loop) per
	// second of SendDurationS; ThroughputRPS is OK responses per second of
	// DurationS.
	SendRateRPS   float64 `json:"send_rate_rps"`
	ThroughputRPS float64 `json:"throughput_rps"`

	Latency Latencies `json:"latency_ms"`
	// StartLag is how late requests started after their scheduled time
	// (open loop only): the generator's own delay plus waiting for a free
	// worker at --max-inflight.
	StartLag Percentiles `json:"start_lag_ms"`
	// Errors counts requests by failure class; every class is present.
	Errors map[string]int64 `json:"errors"`
	// Status counts responses by HTTP status code.
	Status map[int]int64 `json:"status"`

	// GeneratorBottleneck is set when the generator, not the server, limited
	// the run; GeneratorNote says why, or notes the server was the limit.
	GeneratorBottleneck bool    `json:"generator_bottleneck"`
	GeneratorNote       string  `json:"generator_note,omitempty"`
	GeneratorCPUCores   float64 `json:"generator_cpu_cores"`
	GeneratorMemMB      float64 `json:"generator_mem_mb"`
}

// Latencies splits latency into all requests, cold and warm ones. Requests
// that got a response or timed out are counted, and in Overall also requests
// given up after waiting longer than the timeout for a worker (backlog);
// connection failures are not.
type Latencies struct {
	Overall Percentiles `json:"overall"`
	Cold    Percentiles `json:"cold"`
	Warm    Percentiles `json:"warm"`
}

// Config summarises the options of a run.
type Config struct {
	Addr        string  `json:"addr"`
	Scheme      string  `json:"scheme"`
	Protocol    string  `json:"protocol"`
	Mode        string  `json:"mode"` // "open" or "closed"
	Rate        float64 `json:"rate,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	Duration    string  `json:"duration,omitempty"`
	Requests    int64   `json:"requests,omitempty"`
	Warmup      string  `json:"warmup"`
	Hosts       string  `json:"hosts"`
	NumHosts    int     `json:"num_hosts"`
	Dist        string  `json:"dist"`
	Method      string  `json:"method"`
	Path        string  `json:"path"`
	Check       string  `json:"check"`
	MaxInflight int     `json:"max_inflight,omitempty"`
	Timeout     string  `json:"timeout"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
}

func configOf(o *Options) Config {
	c := Config{
		Addr: o.Addr, Scheme: o.Scheme, Protocol: "http/1.1", Mode: "closed",
		Concurrency: o.Concurrency, Requests: o.Requests, Warmup: o.Warmup.String(),
		Hosts: o.HostTemplate, NumHosts: o.Envs, Dist: o.dist.String(),
		Method: o.Method, Path: o.Path, Timeout: o.Timeout.String(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	if o.HTTP2 {
		c.Protocol = "h2"
	}
	if o.openLoop() {
		c.Mode, c.Rate, c.Concurrency, c.MaxInflight = "open", o.Rate, 0, o.MaxInflight
	}
	if o.Duration > 0 {
		c.Duration = o.Duration.String()
	}
	switch {
	case len(o.HostList) > 0:
		c.Hosts, c.NumHosts = "list", len(o.HostList)
	case o.dist.kind == distHotCold:
		c.NumHosts = o.dist.hot
	}
	switch {
	case o.NoCheck:
		c.Check = "none"
	case o.ExpectBody != "":
		c.Check = "body contains " + strconv.Quote(o.ExpectBody)
	default:
		c.Check = "header " + o.ExpectHeader
	}
	return c
}

func (r *runner) report(ph phases, cpu time.Duration) *Report {
	o := r.o
	m := mergeShards(r.shards)
	measured := max(ph.end-o.Warmup, 0)
	send := max(ph.lastSend-o.Warmup, 0)
	rep := &Report{
		Version:       ReportVersion,
		Config:        configOf(o),
		Started:       r.start.UTC().Truncate(time.Millisecond),
		DurationS:     round3(measured.Seconds()),
		SendDurationS: round3(send.Seconds()),
		Scheduled:     ph.scheduled,
		OK:            m.errs[classOK],
		Latency: Latencies{
			Overall: percentilesOf(m.all),
			Cold:    percentilesOf(m.cold),
			Warm:    percentilesOf(m.warm),
		},
		StartLag: percentilesOf(m.lag),
		Errors:   map[string]int64{},
		Status:   m.status,
	}
	for c := classOK + 1; c < numClasses; c++ {
		rep.Errors[classNames[c]] = m.errs[c]
	}
	for c, n := range m.errs {
		if errClass(c) != classBacklog {
			rep.Requests += n
		}
	}
	sent := rep.Requests
	if o.openLoop() {
		sent = ph.scheduled
	}
	if send > 0 {
		rep.SendRateRPS = round3(float64(sent) / send.Seconds())
	}
	if measured > 0 {
		rep.ThroughputRPS = round3(float64(rep.OK) / measured.Seconds())
	}
	if wall := ph.end.Seconds(); wall > 0 {
		rep.GeneratorCPUCores = round3(cpu.Seconds() / wall)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rep.GeneratorMemMB = round3(float64(ms.Sys) / (1 << 20))
	rep.GeneratorBottleneck, rep.GeneratorNote = diagnose(diagInput{
		openLoop:    o.openLoop(),
		rate:        o.Rate,
		sendRate:    rep.SendRateRPS,
		capHit:      ph.capHit,
		maxInflight: o.MaxInflight,
		backlog:     rep.Errors[classNames[classBacklog]],
		startLagP99: time.Duration(rep.StartLag.P99 * float64(time.Millisecond)),
		startLagMax: time.Duration(rep.StartLag.Max * float64(time.Millisecond)),
		cpuCores:    rep.GeneratorCPUCores,
		numCPU:      runtime.GOMAXPROCS(0),
		wall:        ph.end,
	})
	return rep
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// diagInput is what diagnose judges a run by.
type diagInput struct {
	openLoop                 bool
	rate, sendRate           float64
	capHit                   bool
	maxInflight              int
	backlog                  int64
	startLagP99, startLagMax time.Duration
	cpuCores                 float64
	numCPU                   int
	wall                     time.Duration // the whole run, warm-up included
}

// lateStart is the start lag (p99) beyond which an open-loop run that never
// reached --max-inflight blames the generator: with a free worker always at
// hand, only the generator's own CPU or scheduling can make requests late.
const lateStart = 10 * time.Millisecond

// diagnose says whether the generator limited the run, and why.
func diagnose(in diagInput) (bottleneck bool, note string) {
	var notes []string
	// A run shorter than a second is too short to judge CPU use by.
	cpuBound := in.numCPU > 0 && in.wall >= time.Second && in.cpuCores >= 0.9*float64(in.numCPU)
	switch {
	case in.openLoop && in.capHit:
		n := fmt.Sprintf("the server did not keep up: all %d allowed requests were in flight (--max-inflight), so requests started late", in.maxInflight)
		if in.backlog > 0 {
			n += fmt.Sprintf(" and %d were never sent (backlog: queue full, or waited longer than --timeout)", in.backlog)
		}
		notes = append(notes, n)
	case in.openLoop && (in.sendRate < 0.95*in.rate || in.startLagP99 > lateStart):
		bottleneck = true
		notes = append(notes, fmt.Sprintf("the generator could not keep the requested rate: sent %.0f/s of %.0f/s; requests started up to %s late (p99 %s)",
			in.sendRate, in.rate, in.startLagMax.Round(time.Millisecond), in.startLagP99.Round(time.Millisecond)))
	}
	if cpuBound {
		bottleneck = true
		notes = append(notes, fmt.Sprintf("the generator's process used %.1f of %d CPUs: results may measure the generator, not the server", in.cpuCores, in.numCPU))
	}
	return bottleneck, strings.Join(notes, "; ")
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("loadtest: write report: %w", err)
	}
	return nil
}

// LoadReport reads a report written by WriteJSON.
func LoadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: load report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("loadtest: load report %s: %w", path, err)
	}
	if r.Version < 1 || r.Version > ReportVersion {
		return nil, fmt.Errorf("loadtest: load report %s: version %d, want 1..%d (is it a loadtest --json report?)", path, r.Version, ReportVersion)
	}
	return &r, nil
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) {
	c := r.Config
	load := fmt.Sprintf("concurrency %d", c.Concurrency)
	if c.Mode == "open" {
		load = fmt.Sprintf("%g req/s", c.Rate)
	}
	span := c.Duration
	if c.Requests > 0 {
		span = strconv.FormatInt(c.Requests, 10) + " requests"
	}
	fmt.Fprintf(w, "%s loop, %s, %s (warm-up %s), %s %s://%s %s over %d hosts (%s, %s), check: %s\n",
		c.Mode, load, span, c.Warmup, c.Method, c.Scheme, c.Addr, c.Protocol, c.NumHosts, c.Hosts, c.Dist, c.Check)
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: the report covers only part of the run")
	}
	fmt.Fprintf(w, "requests %d in %.2fs: sent %.1f/s, %d ok, throughput %.1f/s\n\n",
		r.Requests, r.DurationS, r.SendRateRPS, r.OK, r.ThroughputRPS)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency ms\tcount\tp50\tp90\tp99\tp99.9\tmax\tmean\t")
	row := func(name string, p Percentiles) {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", name, p.Count, p.P50, p.P90, p.P99, p.P999, p.Max, p.Mean)
	}
	row("overall", r.Latency.Overall)
	row("cold", r.Latency.Cold)
	row("warm", r.Latency.Warm)
	if r.StartLag.Count > 0 {
		row("start lag", r.StartLag)
	}
	tw.Flush()

	fmt.Fprint(w, "\nerrors:")
	for _, name := range classNames[1:] {
		fmt.Fprintf(w, " %s %d", name, r.Errors[name])
	}
	fmt.Fprint(w, "\nstatus:")
	codes := make([]int, 0, len(r.Status))
	for code := range r.Status {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	for _, code := range codes {
		fmt.Fprintf(w, " %d=%d", code, r.Status[code])
	}
	if len(codes) == 0 {
		fmt.Fprint(w, " none")
	}
	fmt.Fprintf(w, "\ngenerator: %.2f CPU cores, %.0f MB", r.GeneratorCPUCores, r.GeneratorMemMB)
	switch {
	case r.GeneratorBottleneck:
		fmt.Fprintf(w, "\nGENERATOR BOTTLENECK: %s\n", r.GeneratorNote)
	case r.GeneratorNote != "":
		fmt.Fprintf(w, "\nnote: %s\n", r.GeneratorNote)
	default:
		fmt.Fprintln(w, ", kept up")
	}
}
