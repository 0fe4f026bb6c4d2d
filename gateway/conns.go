package gateway

import (
	"context"
	"sync"
)

// Conns tracks long-lived connections that http.Server.Shutdown does not
// see: TCP splices, and hijacked (upgraded) HTTP connections such as
// WebSockets. Shutdown waits for them to end by themselves, and when its
// grace is over closes what is left through each one's close function (a
// WebSocket's sends close frame 1001 "going away" first).
//
// The zero value is ready to use. Methods are safe for concurrent use.
type Conns struct {
	mu      sync.Mutex
	open    map[*trackedConn]struct{} // guarded by mu
	closing bool                      // guarded by mu; Shutdown has begun
	idle    chan struct{}             // guarded by mu; closed when open empties during Shutdown
}

type trackedConn struct {
	close func()
	once  sync.Once
}

// Add registers a connection with the function that closes it. It returns
// done, which the caller must call when the connection has ended (it is
// idempotent), and false when Shutdown has already begun: the caller should
// then close the connection at once.
func (c *Conns) Add(close func()) (done func(), ok bool) {
	t := &trackedConn{close: close}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return func() {}, false
	}
	if c.open == nil {
		c.open = make(map[*trackedConn]struct{})
	}
	c.open[t] = struct{}{}
	return func() { c.remove(t) }, true
}

func (c *Conns) remove(t *trackedConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.open[t]; !ok {
		return
	}
	delete(c.open, t)
	if len(c.open) == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// Len is the number of connections open.
func (c *Conns) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// Shutdown refuses new connections, waits until every tracked connection
// has ended or ctx is done, and then closes those left and waits for them
// to report done. It returns ctx's cause if it had to close any.
func (c *Conns) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	if len(c.open) == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	left := make([]*trackedConn, 0, len(c.open))
	for t := range c.open {
		left = append(left, t)
	}
	c.mu.Unlock()
	for _, t := range left {
		t.once.Do(t.close)
	}
	<-idle
	return context.Cause(ctx)
}
