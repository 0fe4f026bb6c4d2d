package devserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns"
)

// Probe pacing: a check every millisecond for the first probeTightFor,
// then gaps growing by half up to probeMaxGap, so a dev server that boots
// in 5 ms is seen within a millisecond, one that boots in 20 ms within
// about 5 ms, and a slow one costs few probes. A refused probe is not
// free: a socket, a SYN and a reset through the env's veth and firewall,
// a dial goroutine, about 0.1 ms of CPU in all; at a 1 ms pace for 100 ms
// (as before) they were a third of the gateway's CPU per start in a start
// storm, where dev servers boot in 20-40 ms. Servers that say when they
// listen are seen at once whatever the pace (probes on output, below).
const (
	probeFirstGap = time.Millisecond
	probeTightFor = 5 * time.Millisecond
	probeMaxGap   = 50 * time.Millisecond
	// probeOutputGap bounds probes prompted by output, so a server that
	// floods its output while it boots is not probed in a loop.
	probeOutputGap = 500 * time.Microsecond
	// probeFreeOutput is how many lines of output prompt a probe with no
	// wait at all: a dev server says a few things while it boots, the
	// last of them often that it listens.
	probeFreeOutput = 16
)

// probeDialTimeout bounds one probe's connect. Over a local veth a
// connect is answered in microseconds, by the server or by a reset; a SYN
// lost while the sandbox settles would otherwise wait for TCP's 1s
// retransmission.
const probeDialTimeout = 100 * time.Millisecond

var probeClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext:       (&net.Dialer{Timeout: probeDialTimeout, Control: netns.MarkSocket}).DialContext,
	},
	// A probe must not follow a redirect off to somewhere else.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// probe polls addr until the dev server answers, it exits, or ctx ends.
// Besides its pace, it probes at once when the server writes a line of
// output (lines), at most every probeOutputGap: dev servers tend to say
// when they listen ("ready", "listening on"), so the wait for a server
// that boots in 5 ms ends with its message rather than the next tick.
//
// silent, if not nil, is asked before each probe: true means nothing
// listens on addr yet (netns.ListenProbe asks the kernel's socket table),
// so the probe would be refused and is skipped, as if it had been.
func probe(ctx context.Context, addr netip.AddrPort, httpPath string, exited, lines <-chan struct{}, silent func() bool) error {
	return defaultPace.probe(ctx, addr, httpPath, exited, lines, silent)
}

// probePace is the pace of probe: see the constants.
type probePace struct {
	first, tightFor, max, output time.Duration
	freeOutput                   int
}

var defaultPace = probePace{first: probeFirstGap, tightFor: probeTightFor, max: probeMaxGap, output: probeOutputGap, freeOutput: probeFreeOutput}

func (pp probePace) probe(ctx context.Context, addr netip.AddrPort, httpPath string, exited, lines <-chan struct{}, silent func() bool) error {
	gap, began := pp.first, time.Now()
	free := pp.freeOutput // output lines that may prompt a probe at once
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		select {
		case <-exited:
			return lifecycle.ErrExited
		default:
		}
		if (silent == nil || !silent()) && probeOnce(ctx, addr, httpPath) == nil {
			return nil
		}
		last := time.Now()
		t.Reset(gap)
	wait:
		for {
			select {
			case <-exited:
				return lifecycle.ErrExited
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-t.C:
				break wait
			case <-lines:
				// The first few lines of output prompt a probe at once;
				// after them, a line does so at most every pp.output
				// while the pace is tight, then every half gap, counted
				// from the last probe's end: a server that floods its
				// output while it boots gets at most about twice the
				// probes of one that says nothing.
				minGap := pp.output
				if time.Since(began) > pp.tightFor {
					minGap = max(minGap, gap/2)
				}
				if free > 0 || time.Since(last) >= minGap {
					free--
					t.Stop()
					break wait
				}
			}
		}
		gap = pp.nextGap(gap, time.Since(began))
	}
}

// nextGap is the wait after a probe that waited gap, elapsed into the
// probing.
func (pp probePace) nextGap(gap, elapsed time.Duration) time.Duration {
	if elapsed > pp.tightFor {
		return min(gap*3/2, pp.max)
	}
	return gap
}

func probeOnce(ctx context.Context, addr netip.AddrPort, httpPath string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if httpPath == "" {
		// Marked as the gateway's own: the firewall rejects the rest.
		d := net.Dialer{Timeout: probeDialTimeout, Control: netns.MarkSocket}
		c, err := d.DialContext(ctx, "tcp", addr.String())
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+httpPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "envgate-probe")
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("probe: status %d", resp.StatusCode)
	}
	return nil
}
