package gateway

import (
	"net"
	"sync/atomic"
)

// Bytes through the gateway, counted where they cross its listeners:
// every byte a client sends (request heads and bodies, TLS records,
// WebSocket frames) and every byte it gets. Counting at the connection
// costs one small allocation per accepted connection and an atomic add
// per read or write system call, and nothing per request, so the warm
// path stays as it is benchmarked.

// CountBytes wraps ln: each connection it accepts adds what it reads to
// received and what it writes to sent. Wrap below TLS (the TLS listener
// around the returned one) to count what went over the wire.
func CountBytes(ln net.Listener, received, sent *atomic.Uint64) net.Listener {
	return &countingListener{Listener: ln, received: received, sent: sent}
}

type countingListener struct {
	net.Listener
	received, sent *atomic.Uint64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

// countingConn is an accepted connection whose bytes are counted.
type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.l.received.Add(uint64(n))
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.l.sent.Add(uint64(n))
	}
	return n, err
}

// CloseWrite half-closes the connection if it can (a TCP hop splices it,
// half-closes included; see clustertcp.go), and closes it otherwise.
func (c *countingConn) CloseWrite() error { return closeWrite(c.Conn) }
