package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
)

// envConns remembers the proxy's open connections to each env address, so
// that they can be closed when the env is about to stop. A dev server
// that drains keep-alive connections on SIGTERM (Go's Shutdown, Node's
// close) would otherwise wait for connections the gateway holds idle or
// dialed and never used, for its whole grace period.
type envConns struct {
	mu    sync.Mutex
	conns map[netip.Addr]map[*envConn]struct{} // guarded by mu; by env IP
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// track wraps dial so every connection it makes is remembered until it
// is closed.
func (ec *envConns) track(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		ap, perr := netip.ParseAddrPort(addr)
		if perr != nil {
			return c, nil
		}
		tc := &envConn{Conn: c, ec: ec, addr: ap.Addr()}
		ec.mu.Lock()
		if ec.conns == nil {
			ec.conns = make(map[netip.Addr]map[*envConn]struct{})
		}
		if ec.conns[tc.addr] == nil {
			ec.conns[tc.addr] = make(map[*envConn]struct{})
		}
		ec.conns[tc.addr][tc] = struct{}{}
		ec.mu.Unlock()
		return tc, nil
	}
}

// closeAll closes every tracked connection to addr, on any port.
func (ec *envConns) closeAll(addr netip.Addr) int {
	ec.mu.Lock()
	set := ec.conns[addr]
	delete(ec.conns, addr)
	ec.mu.Unlock()
	for c := range set {
		c.Conn.Close()
	}
	return len(set)
}

type envConn struct {
	net.Conn
	ec   *envConns
	addr netip.Addr
}

func (c *envConn) Close() error {
	c.ec.mu.Lock()
	if set := c.ec.conns[c.addr]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(c.ec.conns, c.addr)
		}
	}
	c.ec.mu.Unlock()
	return c.Conn.Close()
}

// CloseEnvConns closes the proxy's connections to an env at addr (every
// port of its address). Call it only when nothing is in flight to that env:
// lifecycle.Config.BeforeStop is the place, just before the dev server
// gets SIGTERM, so it need not wait for idle keep-alive connections.
func (h *Handler) CloseEnvConns(env string, addr netip.AddrPort) {
	if n := h.envConns.closeAll(addr.Addr()); n > 0 && h.debug {
		h.log.Debug().Str("env", env).Int("conns", n).Msg("closed connections to a stopping env")
	}
}
