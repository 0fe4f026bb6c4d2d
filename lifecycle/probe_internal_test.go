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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens until the "server" says so

	slow := probePace{first: time.Hour, tightFor: time.Hour, max: time.Hour, output: time.Millisecond}
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
