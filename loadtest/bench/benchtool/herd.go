package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"time"
)

// HerdResult is what `benchtool herd` prints.
type HerdResult struct {
	Addr     string `json:"addr"`
	Hosts    string `json:"hosts"`
	Envs     int    `json:"envs"`
	Requests int    `json:"requests"`
	// AllAnsweredMS is from the release of the herd to the last answer.
	AllAnsweredMS float64 `json:"all_answered_ms"`
	// Latency is each request's own time to its full answer.
	Latency Summary        `json:"latency_ms"`
	OK      int            `json:"ok"`
	Errors  int            `json:"errors"`
	Status  map[string]int `json:"status"`
	// FirstError is one failure's text, to say what went wrong.
	FirstError string `json:"first_error,omitempty"`
}

// runHerd releases n requests at once, request i to host i mod envs, each
// on a connection of its own, and times until every one has answered.
func runHerd(args []string) (*HerdResult, error) {
	fs := flag.NewFlagSet("herd", flag.ContinueOnError)
	addr := fs.String("addr", "", "HOST:PORT to dial for every request")
	hosts := fs.String("hosts", "herd{{.I}}.localhost", "hostname template over {{.I}}")
	envs := fs.Int("envs", 1, "number of distinct hosts")
	n := fs.Int("n", 1000, "number of requests")
	path := fs.String("path", "/healthz", "request path")
	timeout := fs.Duration("timeout", 60*time.Second, "per-request timeout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *addr == "" || *envs < 1 || *n < 1 {
		return nil, errors.New("herd: want -addr, -envs >= 1 and -n >= 1")
	}
	namer, err := newHostNamer(*hosts)
	if err != nil {
		return nil, fmt.Errorf("herd: -hosts: %w", err)
	}
	names := make([]string, *envs)
	for i := range names {
		if names[i], err = namer.host(i); err != nil {
			return nil, fmt.Errorf("herd: -hosts: %w", err)
		}
	}

	client := newClient(*addr, *timeout, true)
	answers := make([]answer, *n)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range *n {
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			<-start
			answers[i] = get(context.Background(), client, names[i%*envs], *path)
		})
	}
	ready.Wait()
	released := time.Now()
	close(start)
	done.Wait()

	res := &HerdResult{Addr: *addr, Hosts: *hosts, Envs: *envs, Requests: *n, Status: map[string]int{}}
	var lat []time.Duration
	var last time.Time
	for _, a := range answers {
		res.Status[a.statusKey()]++
		if a.finished.After(last) {
			last = a.finished
		}
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
	res.AllAnsweredMS = ms(last.Sub(released))
	return res, nil
}
