package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ColdResult is what `benchtool cold` prints.
type ColdResult struct {
	Addr  string `json:"addr"`
	Hosts string `json:"hosts"`
	// TTFB is from just before dialing to the response's headers, over
	// every answer from the right env: each host is new, so each request
	// is the first its env sees.
	TTFB Summary `json:"ttfb_ms"`
	// ColdHeader is the gateway's own account of each wait, from its
	// Envgate-Cold-Start header (whole milliseconds).
	ColdHeader Summary `json:"cold_header_ms"`
	// NotCold counts answers without that header: the gateway did not wait
	// for a start (a warm pool's env, for instance).
	NotCold int            `json:"not_cold"`
	Errors  int            `json:"errors"`
	Status  map[string]int `json:"status"`
}

// runCold sends one request to each of n distinct hosts, one at a time,
// each over a new connection, and times the first byte of each answer.
func runCold(args []string) (*ColdResult, error) {
	fs := flag.NewFlagSet("cold", flag.ContinueOnError)
	addr := fs.String("addr", "", "HOST:PORT to dial for every request")
	hosts := fs.String("hosts", "cold{{.I}}.localhost", "hostname template over {{.I}}")
	n := fs.Int("n", 100, "number of cold requests (distinct hosts)")
	path := fs.String("path", "/healthz", "request path")
	timeout := fs.Duration("timeout", 30*time.Second, "per-request timeout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *addr == "" {
		return nil, errors.New("cold: -addr is required")
	}
	namer, err := newHostNamer(*hosts)
	if err != nil {
		return nil, fmt.Errorf("cold: -hosts: %w", err)
	}
	client := newClient(*addr, *timeout, true)
	res := &ColdResult{Addr: *addr, Hosts: *hosts, Status: map[string]int{}}
	var ttfb, header []time.Duration
	for i := range *n {
		host, err := namer.host(i)
		if err != nil {
			return nil, fmt.Errorf("cold: -hosts: %w", err)
		}
		a := get(context.Background(), client, host, *path)
		res.Status[a.statusKey()]++
		if !a.ok() {
			res.Errors++
			continue
		}
		ttfb = append(ttfb, a.ttfb)
		if a.cold < 0 {
			res.NotCold++
			continue
		}
		header = append(header, a.cold)
	}
	res.TTFB, res.ColdHeader = summarize(ttfb), summarize(header)
	return res, nil
}

// newClient returns a client whose every connection goes to addr. With
// fresh set, each request has a connection of its own, so no request
// rides on another's; otherwise connections are kept alive.
func newClient(addr string, timeout time.Duration, fresh bool) *http.Client {
	d := &net.Dialer{Timeout: timeout}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			DisableKeepAlives:   fresh,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 1024,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// answer is the outcome of one request.
type answer struct {
	status   int // 0: no response
	err      error
	env      string        // X-Envgate-Env of the response
	want     string        // the env the host names
	ttfb     time.Duration // to the response headers
	total    time.Duration // to the end of the body
	cold     time.Duration // Envgate-Cold-Start, or -1 when absent
	finished time.Time
}

func (a answer) ok() bool { return a.err == nil && a.status == http.StatusOK && a.env == a.want }

// statusKey classes the answer for the report: the status code, or
// "misroute" or "error".
func (a answer) statusKey() string {
	switch {
	case a.err != nil:
		return "error"
	case a.status == http.StatusOK && a.env != a.want:
		return "misroute"
	}
	return strconv.Itoa(a.status)
}

func get(ctx context.Context, c *http.Client, host, path string) answer {
	a := answer{want: envOf(host), cold: -1}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		a.err = err
		return a
	}
	began := time.Now()
	resp, err := c.Do(req)
	a.ttfb = time.Since(began)
	if err != nil {
		a.err = err
		a.finished = time.Now()
		return a
	}
	_, a.err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	a.finished = time.Now()
	a.total = a.finished.Sub(began)
	a.status = resp.StatusCode
	a.env = resp.Header.Get("X-Envgate-Env")
	if v := resp.Header.Get("Envgate-Cold-Start"); v != "" {
		if n, err := strconv.Atoi(strings.TrimSuffix(v, "ms")); err == nil {
			a.cold = time.Duration(n) * time.Millisecond
		}
	}
	return a
}
