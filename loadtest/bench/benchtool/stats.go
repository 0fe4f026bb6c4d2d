package main

import (
	"math"
	"slices"
	"strings"
	"text/template"
	"time"
)

// Summary is the distribution of a set of durations, in milliseconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// summarize computes the summary of ds; percentiles are nearest-rank, so
// with 100 samples p99 is the 99th smallest, never an interpolation.
func summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		N:    len(s),
		Min:  ms(s[0]),
		Mean: ms(sum / time.Duration(len(s))),
		P50:  ms(rank(s, 0.50)),
		P90:  ms(rank(s, 0.90)),
		P99:  ms(rank(s, 0.99)),
		Max:  ms(s[len(s)-1]),
	}
}

// rank is the nearest-rank percentile q of sorted s.
func rank(s []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// ms is d in milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// hostNamer expands a hostname template over {{.I}}, as `envgate loadtest
// --hosts` does.
type hostNamer struct{ t *template.Template }

func newHostNamer(tmpl string) (hostNamer, error) {
	t, err := template.New("hosts").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return hostNamer{}, err
	}
	return hostNamer{t}, nil
}

func (h hostNamer) host(i int) (string, error) {
	var b strings.Builder
	if err := h.t.Execute(&b, struct{ I int }{i}); err != nil {
		return "", err
	}
	return b.String(), nil
}

// envOf is a hostname's first label, the env the gateway routes it to.
func envOf(host string) string {
	env, _, _ := strings.Cut(host, ".")
	return env
}
