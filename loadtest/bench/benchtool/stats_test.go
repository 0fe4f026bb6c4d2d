package main

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * ms // unsorted on purpose
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []time.Duration{3 * ms}, Summary{N: 1, Min: 3, Mean: 3, P50: 3, P90: 3, P99: 3, Max: 3}},
		{"nearest rank", []time.Duration{4 * ms, 1 * ms, 3 * ms, 2 * ms}, Summary{N: 4, Min: 1, Mean: 2.5, P50: 2, P90: 4, P99: 4, Max: 4}},
		{"hundred", hundred, Summary{N: 100, Min: 1, Mean: 50.5, P50: 50, P90: 90, P99: 99, Max: 100}},
		{"microseconds kept", []time.Duration{1500 * time.Microsecond}, Summary{N: 1, Min: 1.5, Mean: 1.5, P50: 1.5, P90: 1.5, P99: 1.5, Max: 1.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Errorf("summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHostNamer(t *testing.T) {
	tests := []struct {
		tmpl string
		i    int
		want string
		env  string
	}{
		{"cold{{.I}}.localhost", 7, "cold7.localhost", "cold7"},
		{"herd.localhost", 3, "herd.localhost", "herd"},
		{"h{{.I}}.dev.example.com", 199, "h199.dev.example.com", "h199"},
	}
	for _, tt := range tests {
		n, err := newHostNamer(tt.tmpl)
		if err != nil {
			t.Fatalf("newHostNamer(%q): %v", tt.tmpl, err)
		}
		got, err := n.host(tt.i)
		if err != nil || got != tt.want || envOf(got) != tt.env {
			t.Errorf("%q at %d = %q (env %q), %v; want %q (env %q)", tt.tmpl, tt.i, got, envOf(got), err, tt.want, tt.env)
		}
	}
	if n, err := newHostNamer("x{{.J}}"); err == nil {
		if _, err := n.host(0); err == nil {
			t.Error("template naming a missing field expanded without error")
		}
	}
}

func TestAnswerClass(t *testing.T) {
	tests := []struct {
		name string
		a    answer
		ok   bool
		key  string
	}{
		{"right env", answer{status: 200, env: "a", want: "a"}, true, "200"},
		{"wrong env", answer{status: 200, env: "b", want: "a"}, false, "misroute"},
		{"unavailable", answer{status: http.StatusServiceUnavailable, want: "a"}, false, "503"},
		{"transport error", answer{err: errors.New("reset"), want: "a"}, false, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.a.ok() != tt.ok || tt.a.statusKey() != tt.key {
				t.Errorf("ok=%v key=%q, want ok=%v key=%q", tt.a.ok(), tt.a.statusKey(), tt.ok, tt.key)
			}
		})
	}
}

func TestPaired(t *testing.T) {
	in := "100 103\n200 206\n\n50 51.5\n10 10.3\n"
	effects, err := readEffects(strings.NewReader(in), false)
	if err != nil {
		t.Fatal(err)
	}
	got := pairedSummary(effects, 1000)
	want := Paired{N: 4, Median: 3, Q1: 3, Q3: 3, CILo: 3, CIHi: 3}
	if got != want {
		t.Errorf("ratios: %+v, want %+v", got, want)
	}
	effects, err = readEffects(strings.NewReader("1 2\n1 3\n1 4\n1 5\n1 6\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	got = pairedSummary(effects, 2000)
	if got.N != 5 || got.Median != 3 || got.Q1 != 2 || got.Q3 != 4 {
		t.Errorf("diffs: %+v, want n 5, median 3, quartiles 2 and 4", got)
	}
	if got.CILo < 1 || got.CILo > 3 || got.CIHi < 3 || got.CIHi > 5 || got.CILo >= got.CIHi {
		t.Errorf("diffs: interval %v … %v, want around 3 within the data's range", got.CILo, got.CIHi)
	}
	for _, bad := range []string{"", "1\n", "0 1\n", "a 1\n"} {
		if _, err := readEffects(strings.NewReader(bad), false); err == nil {
			t.Errorf("readEffects(%q): no error", bad)
		}
	}
}
