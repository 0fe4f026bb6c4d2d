package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
)

// A TCP hop relays a connection of a tcp: listener (TCPProxy) from the
// node it reached to the node that owns its env, as forwardTo does for an
// HTTP request. The relaying node has read the SNI, applied access
// control and placed the env (lifecycle/cluster.Node.Place, exactly as
// for HTTP); it then opens an HTTP/1.1 Upgrade on the owner's advertise
// address (its gateway's HTTP listener, where HTTP hops go too):
//
//	GET /_envgate/tcp?port=<template port> HTTP/1.1
//	Host: <the client's SNI>
//	Connection: Upgrade
//	Upgrade: envgate-tcp/1
//	Envgate-Hop: <relaying node>
//	Envgate-Hop-Auth: <time>.t.<HMAC>
//
// The signature (HopAuthHeader, flag "t") covers the SNI and the port,
// and no HTTP request a node forwards carries that flag, so only a node
// can open a TCP hop, and only to the env and port it signed for. The
// owner places the env as a hop (never forwarded again: served here or
// refused), acquires it, dials the port and answers 101; from then on
// both nodes splice bytes: the relaying node sends what its listener
// would have sent the env (a passthrough listener's already-peeked
// ClientHello first, then the client's TLS records; a terminating
// listener's plain bytes) and the owner sends them on unchanged. Any
// other answer (503 while the cluster cannot place the env, 404 for a
// name no template runs) closes the client's connection, as a local
// failure does.
//
// A terminating listener's plain bytes cross between the nodes as HTTP
// hops do: the nodes' advertise addresses belong on a private network.

// TCPHopProtocol is the Upgrade token of a TCP hop. A request that asks
// for it is served only as a TCP hop signed by a node; any other gets a
// 403.
const TCPHopProtocol = "envgate-tcp/1"

// tcpHopPath is the target of a TCP hop; its query names the port.
const tcpHopPath = "/_envgate/tcp"

// TCPHopRequest is the request node (this node's name) sends, signed
// with the cluster's secret at now, to open a TCP hop to the gateway at
// addr (the owner's advertise address) for a client that connected with
// SNI serverName to template port port ("" for the env's default).
func TCPHopRequest(secret []byte, node, addr, serverName, port string, now time.Time) *http.Request {
	u := &url.URL{Scheme: "http", Host: addr, Path: tcpHopPath, RawQuery: url.Values{"port": {port}}.Encode()}
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       serverName,
		Header:     http.Header{"Connection": {"Upgrade"}, "Upgrade": {TCPHopProtocol}},
	}
	signHop(secret, node, now, hopFlagTCP, req)
	return req
}

// isTCPHopUpgrade reports whether h asks for a TCP hop.
func isTCPHopUpgrade(h http.Header) bool {
	return strings.EqualFold(h.Get("Upgrade"), TCPHopProtocol)
}

// TCPHopError is a node's refusal of a TCP hop: its HTTP status and the
// start of its answer.
type TCPHopError struct {
	Node   string // the node's address
	Status int
	Body   string
}

func (e *TCPHopError) Error() string {
	return fmt.Sprintf("gateway: tcp hop to %s: HTTP %d: %s", e.Node, e.Status, e.Body)
}

// ErrNodeLeft is the error of a TCP hop whose node's session ended
// while the hop waited for its answer.
var ErrNodeLeft = errors.New("the node left the cluster (its session ended) before it answered")

// hopLivePoll is how often a TCP hop waiting for its node's answer
// checks that the node is still a live member of the cluster.
const hopLivePoll = time.Second

// dialTCPHop sends req (a TCPHopRequest) to its node and returns the
// connection once the node has answered 101: bytes written to it go to
// the env's port, and it reads what the env sends. The owner answers
// once the env is up, which may be a cold start; ctx bounds the wait,
// and its cause, if it ends first, is the error.
func dialTCPHop(ctx context.Context, d *net.Dialer, req *http.Request) (_ net.Conn, err error) {
	addr := req.URL.Host
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("gateway: tcp hop to %s: %w", addr, context.Cause(ctx))
		}
	}()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: tcp hop to %s: %w", addr, err)
	}
	success := false
	defer func() {
		if !success {
			c.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if err := req.Write(c); err != nil {
		return nil, fmt.Errorf("gateway: tcp hop to %s: %w", addr, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("gateway: tcp hop to %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, &TCPHopError{Node: addr, Status: resp.StatusCode, Body: string(bytes.TrimSpace(b))}
	}
	if !stop() {
		return nil, fmt.Errorf("gateway: tcp hop to %s: %w", addr, context.Cause(ctx))
	}
	success = true
	// The env may speak first (a database's greeting): what came with
	// the 101 is read before the rest.
	if n := br.Buffered(); n > 0 {
		return &replayConn{Conn: c, r: io.MultiReader(io.LimitReader(br, int64(n)), c)}, nil
	}
	return c, nil
}

// serveTCPHop serves r, an authenticated TCP hop for env, which
// routeCluster has placed on this node: it acquires env, dials the port
// the hop names, answers 101 and splices the connection to the env's
// port until both ends are done. The connection holds the env's lease,
// so it is activity, as on the node it came to.
func (h *Handler) serveTCPHop(w http.ResponseWriter, r *http.Request, env string, began time.Time) {
	if r.Method != http.MethodGet || r.URL.Path != tcpHopPath || !isTCPHopUpgrade(r.Header) {
		(&errorPage{Status: http.StatusBadRequest, Error: "bad_tcp_hop", Env: env, Message: "A TCP hop is a GET of " + tcpHopPath + " with Upgrade: " + TCPHopProtocol + "."}).write(w, r)
		h.logRequest(r, env, http.StatusBadRequest, began)
		return
	}
	port := r.URL.Query().Get("port")
	lease, err := h.envs.Acquire(r.Context(), env)
	if err != nil {
		h.logRequest(r, env, h.acquireError(w, r, env, err, false), began)
		return
	}
	defer lease.Release()
	target, ok := lease.Port(port)
	if !ok {
		(&errorPage{Status: http.StatusNotFound, Error: "unknown_port", Env: env, Message: "Environment " + env + " has no port " + quote(port) + "."}).write(w, r)
		h.logRequest(r, env, http.StatusNotFound, began)
		return
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: netns.MarkSocket}
	backend, err := dialLease(r.Context(), &d, lease, "tcp", target.String())
	if err != nil {
		h.upstreamError(w, r, env, err)
		h.logRequest(r, env, http.StatusBadGateway, began)
		return
	}
	defer backend.Close()
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.log.Warn().Err(err).Str("env", env).Msg("tcp hop: hijack")
		return
	}
	defer c.Close()
	done, ok := h.conns.Add(func() { c.Close() })
	defer done()
	if !ok {
		return // shutting down
	}
	c.SetDeadline(time.Time{})
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + TCPHopProtocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	var client net.Conn = c
	if n := brw.Reader.Buffered(); n > 0 {
		client = &replayConn{Conn: c, r: io.MultiReader(io.LimitReader(brw.Reader, int64(n)), c)}
	}
	up, down := splice(client, backend)
	h.logRequest(r, env, http.StatusSwitchingProtocols, began)
	h.log.Debug().Str("env", env).Str("port", port).Str("from", hopOf(r).node).Str("remote", r.RemoteAddr).
		Int64("bytes_up", up).Int64("bytes_down", down).Dur("took", time.Since(began)).Dur("cold", lease.ColdStart()).Msg("tcp hop")
}

// routeCluster places env and, when another node serves it, relays
// client (a connection for env's port by SNI serverName) there. It
// reports whether it handled the connection; false means this node owns
// env and serves it as a single gateway would.
func (p *TCPProxy) routeCluster(client net.Conn, env, serverName, port string, log zerolog.Logger) bool {
	addr, err := p.cfg.Cluster.Place(p.ctx, env, false)
	if err != nil {
		log.Warn().Err(err).Msg("tcp: cluster placement failed")
		return true
	}
	if addr == "" {
		return false
	}
	began := time.Now()
	up, down, err := p.relay(client, addr, serverName, port)
	var he *TCPHopError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusNotFound:
		// A name anyone can make up, as on the local path.
		log.Debug().Err(err).Msg("tcp: no such env")
	case errors.As(err, &he):
		log.Warn().Err(err).Str("node", addr).Msg("tcp: the env's node refused the connection")
	case err != nil:
		// Dead, partitioned or shutting down: the client's connection
		// closes, as no env can answer it; a connection after the
		// node's session_ttl is placed on a live node.
		log.Warn().Err(err).Str("node", addr).Msg("tcp: the env's node is unreachable")
	default:
		log.Debug().Str("node", addr).Int64("bytes_up", up).Int64("bytes_down", down).Dur("took", time.Since(began)).Msg("tcp connection relayed")
	}
	return true
}

// relay splices client to the node at addr through a TCP hop for
// serverName's port. A node that stops answering while the hop waits
// (frozen, or cut off from the others with its connections open) would
// hold the client, which may have given up, as long as the listener
// lives; so the wait also ends when the node's session does, and the
// next connection places the env on a live node.
func (p *TCPProxy) relay(client net.Conn, addr, serverName, port string) (up, down int64, err error) {
	req := TCPHopRequest(p.cfg.ClusterSecret, p.cfg.Node, addr, serverName, port, time.Now())
	ctx, cancel := context.WithCancelCause(p.ctx)
	defer cancel(nil)
	watched := p.watchNode(ctx, cancel, addr)
	node, err := dialTCPHop(ctx, &p.hopDialer, req)
	cancel(nil)
	<-watched
	if err != nil {
		return 0, 0, err
	}
	defer node.Close()
	up, down = splice(client, node)
	return up, down, nil
}

// watchNode cancels ctx with ErrNodeLeft once the node at addr is no
// longer a live member of the cluster; it checks every hopLivePoll until
// ctx ends, and closes the channel it returns when it has stopped.
func (p *TCPProxy) watchNode(ctx context.Context, cancel context.CancelCauseFunc, addr string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(hopLivePoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !p.cfg.Cluster.Live(addr) {
					cancel(ErrNodeLeft)
					return
				}
			}
		}
	}()
	return done
}
