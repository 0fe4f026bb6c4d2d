package lifecycle

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestProbeOnOutput checks that a line of output prompts a probe: with
// ticks an hour apart, only the line can find the server listening.
func TestProbeOnOutput(t *testing.T) {
	for name, pace := range map[string]probePace{
		// The line may prompt a probe only by the output bound.
		"bounded": {first: time.Hour, tightFor: time.Hour, max: time.Hour, output: time.Millisecond},
		// Only as one of the first lines, which prompt a probe at once.
		"free": {first: time.Hour, tightFor: time.Hour, max: time.Hour, output: time.Hour, freeOutput: 1},
	} {
		t.Run(name, func(t *testing.T) { probeOnOutput(t, pace) })
	}
}

// probeOnOutput checks that, with ticks an hour apart, a line of output
// makes slow find a server that started listening after the first probe.
func probeOnOutput(t *testing.T, slow probePace) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens until the "server" says so

	lines := make(chan struct{}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- slow.probe(ctx, addr, "", nil, lines) }()

	time.Sleep(20 * time.Millisecond) // the first probe has failed by now
	ln, err = net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	lines <- struct{}{} // "listening on ..."
	if err := <-done; err != nil {
		t.Fatalf("probe: %v; want it to find the server after its line of output", err)
	}
}
