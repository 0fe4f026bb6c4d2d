package netnstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// LoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for a server a test starts later (a gateway's listener, an embedded
// etcd). It is drawn below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), so no outgoing connection of another
// test takes it between now and that server's listen, as one can take a
// port the kernel hands out for 127.0.0.1:0.
func LoopbackPort(t testing.TB) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	const from = 20000
	if low <= from+1000 {
		t.Fatalf("ephemeral ports start at %d: no room below them for test servers", low)
	}
	for range 100 {
		p := from + rand.IntN(low-from)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatalf("no free port in %d-%d on 127.0.0.1", from, low-1)
	return 0
}
