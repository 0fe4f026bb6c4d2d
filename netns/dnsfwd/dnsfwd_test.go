package dnsfwd

import (
	"net/netip"
	"testing"
	"time"
)

// TestCloseRightAfterStart: a Close that follows Start at once (a gateway
// whose start fails a step later) returns; before Start waited for its
// servers, a Shutdown that came before a server's start left that server
// serving and Close waiting for it for ever.
func TestCloseRightAfterStart(t *testing.T) {
	for range 50 {
		f, err := Start(Config{Addr: "127.0.0.1:0", Clients: netip.MustParsePrefix("10.0.0.0/8"), Upstreams: []string{"127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() { closed <- f.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close right after Start did not return in 30s")
		}
	}
}
