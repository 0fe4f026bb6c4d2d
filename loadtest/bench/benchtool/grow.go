package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// GrowResult is what `benchtool grow` prints.
type GrowResult struct {
	Addr        string `json:"addr"`
	Hosts       string `json:"hosts"`
	Envs        int    `json:"envs"`
	Concurrency int    `json:"concurrency"`
	// Seconds is from the first request to the last answer.
	Seconds float64 `json:"seconds"`
	// StartsPerSecond is OK answers (each a started env) per second over
	// the whole run: the sustained start rate, queueing included.
	StartsPerSecond float64 `json:"starts_per_s"`
	// Latency is each request's time to its full answer, waiting for its
	// turn among the gateway's starts included.
	Latency    Summary        `json:"latency_ms"`
	OK         int            `json:"ok"`
	Errors     int            `json:"errors"`
	Status     map[string]int `json:"status"`
	FirstError string         `json:"first_error,omitempty"`
}

// runGrow sends one request to each of envs distinct hosts, c at a time (a
// closed loop), so that envs new envs are running at the end, and reports
// how fast they started. Unlike herd it never has more than c requests in
// flight, so the rate is the gateway's, not a queue's drain.
func runGrow(args []string) (*GrowResult, error) {
	fs := flag.NewFlagSet("grow", flag.ContinueOnError)
	addr := fs.String("addr", "", "HOST:PORT to dial for every request")
	hosts := fs.String("hosts", "g{{.I}}.localhost", "hostname template over {{.I}}")
	envs := fs.Int("envs", 100, "number of distinct hosts, each requested once")
	c := fs.Int("concurrency", 16, "requests in flight at once")
	path := fs.String("path", "/healthz", "request path")
	timeout := fs.Duration("timeout", 60*time.Second, "per-request timeout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *addr == "" || *envs < 0 || *c < 1 {
		return nil, errors.New("grow: want -addr, -envs >= 0 and -concurrency >= 1")
	}
	namer, err := newHostNamer(*hosts)
	if err != nil {
		return nil, fmt.Errorf("grow: -hosts: %w", err)
	}
	names := make([]string, *envs)
	for i := range names {
		if names[i], err = namer.host(i); err != nil {
			return nil, fmt.Errorf("grow: -hosts: %w", err)
		}
	}

	// Keep-alive connections: the gateway's start, not the client's dial,
	// is what is being measured.
	client := newClient(*addr, *timeout, false)
	answers := make([]answer, *envs)
	var next atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range min(*c, max(*envs, 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) {
					return
				}
				answers[i] = get(context.Background(), client, names[i], *path)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)

	res := &GrowResult{Addr: *addr, Hosts: *hosts, Envs: *envs, Concurrency: *c, Status: map[string]int{}}
	var lat []time.Duration
	for _, a := range answers {
		res.Status[a.statusKey()]++
		if !a.ok() {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("%s: status %d env %q err %v", a.want, a.status, a.env, a.err)
			}
			continue
		}
		res.OK++
		lat = append(lat, a.total)
	}
	res.Latency = summarize(lat)
	res.Seconds = ms(elapsed) / 1000
	if elapsed > 0 {
		res.StartsPerSecond = float64(res.OK) / elapsed.Seconds()
	}
	return res, nil
}
