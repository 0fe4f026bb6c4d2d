package loadtest

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// metric is one number Compare sets side by side.
type metric struct {
	name  string
	value func(*Report) float64
}

func latencyMetrics(kind string, get func(*Report) Percentiles) []metric {
	return []metric{
		{kind + " p50 ms", func(r *Report) float64 { return get(r).P50 }},
		{kind + " p90 ms", func(r *Report) float64 { return get(r).P90 }},
		{kind + " p99 ms", func(r *Report) float64 { return get(r).P99 }},
		{kind + " p99.9 ms", func(r *Report) float64 { return get(r).P999 }},
		{kind + " max ms", func(r *Report) float64 { return get(r).Max }},
	}
}

func compareMetrics() []metric {
	ms := []metric{
		{"requests", func(r *Report) float64 { return float64(r.Requests) }},
		{"duration s", func(r *Report) float64 { return r.DurationS }},
		{"send rate /s", func(r *Report) float64 { return r.SendRateRPS }},
		{"throughput /s", func(r *Report) float64 { return r.ThroughputRPS }},
	}
	ms = append(ms, latencyMetrics("overall", func(r *Report) Percentiles { return r.Latency.Overall })...)
	ms = append(ms, latencyMetrics("cold", func(r *Report) Percentiles { return r.Latency.Cold })...)
	ms = append(ms, latencyMetrics("warm", func(r *Report) Percentiles { return r.Latency.Warm })...)
	ms = append(ms, metric{"cold requests", func(r *Report) float64 { return float64(r.Latency.Cold.Count) }})
	for _, name := range classNames[1:] {
		ms = append(ms, metric{"errors " + name, func(r *Report) float64 { return float64(r.Errors[name]) }})
	}
	ms = append(ms,
		metric{"generator cpu cores", func(r *Report) float64 { return r.GeneratorCPUCores }},
		metric{"generator mem MB", func(r *Report) float64 { return r.GeneratorMemMB }},
	)
	return ms
}

// Compare writes, for each metric of two reports, a, b and the ratio b/a.
func Compare(a, b *Report, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\ta\tb\tb/a\t")
	for _, m := range compareMetrics() {
		va, vb := m.value(a), m.value(b)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", m.name, formatValue(va), formatValue(vb), ratio(va, vb))
	}
	tw.Flush()
	for _, x := range []struct {
		name string
		r    *Report
	}{{"a", a}, {"b", b}} {
		if x.r.GeneratorBottleneck {
			fmt.Fprintf(w, "%s: GENERATOR BOTTLENECK: %s\n", x.name, x.r.GeneratorNote)
		}
		if x.r.Interrupted {
			fmt.Fprintf(w, "%s: interrupted run\n", x.name)
		}
	}
}

func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// ratio is b/a, with "-" when both are zero and "inf" when only a is.
func ratio(a, b float64) string {
	switch {
	case a == 0 && b == 0:
		return "-"
	case a == 0:
		return "inf"
	}
	return fmt.Sprintf("%.2f", b/a)
}
