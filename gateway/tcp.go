package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
)

// TLSMode says what a TCP listener does with the client's TLS.
type TLSMode string

// The TLS modes of a TCP listener.
const (
	// TLSTerminate completes the handshake with the gateway's certificate
	// and sends the env plain bytes.
	TLSTerminate TLSMode = "terminate"
	// TLSPassthrough reads only the ClientHello, for its SNI, and replays
	// it to the env, which does the TLS itself.
	TLSPassthrough TLSMode = "passthrough"
)

// TCPConfig configures a TCPProxy.
type TCPConfig struct {
	// Domains, Envs and PortSeparator are as in Config.
	Domains       []string
	Envs          Envs
	PortSeparator string
	// Port is the template port this listener reaches when the SNI names
	// none (db for <env>.<domain>); "" is the env's default port. A port
	// named in the SNI (api--<env>.<domain>) wins.
	Port string
	// Mode is TLSTerminate (the default) or TLSPassthrough.
	Mode TLSMode
	// TLS serves the handshake in terminate mode (certs.Manager.TLSConfig);
	// its NextProtos are dropped, as the bytes inside are not HTTP.
	TLS *tls.Config
	// Conns tracks spliced connections for Shutdown; default a private
	// one. Share one with the HTTP side to shut both down together.
	Conns *Conns
	// HandshakeTimeout bounds reading the ClientHello and, in terminate
	// mode, the whole handshake; default 10s.
	HandshakeTimeout time.Duration
	// Log receives connection logs (debug) and failures (warn).
	Log zerolog.Logger
	// Access and NewEnvs are as in Config. A connection carries no HTTP
	// request, so only an access rule's allow_cidrs can admit it.
	Access  *access.Policy
	NewEnvs *NewEnvLimit
	// Cluster, Node and ClusterSecret are as in Config: in cluster mode a
	// connection for an env another node serves is relayed to that node
	// as a TCP hop (see clustertcp.go). Default nil: single node.
	Cluster       Placer
	Node          string
	ClusterSecret []byte
}

// TCPProxy accepts TLS connections, routes each by SNI to an env (starting
// it as HTTP requests do) and splices bytes both ways, half-closes
// included. A connection holds its env's lease, so it counts as activity,
// for as long as it is open.
type TCPProxy struct {
	cfg    TCPConfig
	tls    *tls.Config // terminate mode only
	ports  PortNamer
	known  EnvKnower // Config.Envs, if it tells known envs
	dialer net.Dialer
	// hopDialer dials other nodes of the cluster (TCP hops).
	hopDialer net.Dialer

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc

	mu       sync.Mutex
	lns      map[net.Listener]struct{} // guarded by mu
	shutdown atomic.Bool
}

// NewTCPProxy checks cfg and returns a proxy; call Serve for each listener.
func NewTCPProxy(cfg TCPConfig) (*TCPProxy, error) {
	if len(cfg.Domains) == 0 || cfg.Envs == nil {
		return nil, errors.New("gateway: tcp: Domains and Envs are required")
	}
	if cfg.Mode == "" {
		cfg.Mode = TLSTerminate
	}
	if cfg.PortSeparator == "" {
		cfg.PortSeparator = DefaultPortSeparator
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Conns == nil {
		cfg.Conns = &Conns{}
	}
	if cfg.Access == nil {
		cfg.Access, _ = access.New(access.Config{})
	}
	if cfg.Cluster != nil && len(cfg.ClusterSecret) < MinClusterSecret {
		return nil, fmt.Errorf("gateway: tcp: cluster mode needs a shared secret of at least %d bytes (TCPConfig.ClusterSecret)", MinClusterSecret)
	}
	p := &TCPProxy{cfg: cfg, lns: make(map[net.Listener]struct{}),
		dialer:    net.Dialer{Timeout: 5 * time.Second, Control: netns.MarkSocket},
		hopDialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}}
	p.ports, _ = cfg.Envs.(PortNamer)
	p.known, _ = cfg.Envs.(EnvKnower)
	switch cfg.Mode {
	case TLSTerminate:
		if cfg.TLS == nil {
			return nil, errors.New("gateway: tcp: terminate mode needs a TLS config (tls.mode must not be off)")
		}
		p.tls = cfg.TLS.Clone()
		p.tls.NextProtos = nil
		// Refuse names that are not envs before a certificate is looked
		// up or issued for them.
		next := p.tls.GetConfigForClient
		p.tls.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			label, err := ParseHost(hello.ServerName, cfg.Domains)
			if err != nil {
				return nil, err
			}
			// Nor for a client access control refuses.
			env, _ := SplitPort(label, p.cfg.PortSeparator, p.ports)
			if err := p.cfg.Access.CheckConn(connAddr(hello.Conn), env, isLocalHost(hello.ServerName)); err != nil {
				return nil, err
			}
			if next != nil {
				return next(hello)
			}
			return nil, nil
		}
	case TLSPassthrough:
	default:
		return nil, fmt.Errorf("gateway: tcp: mode %q: want terminate or passthrough", cfg.Mode)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Serve accepts connections on ln until Shutdown, and then returns nil.
func (p *TCPProxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.shutdown.Load() {
		p.mu.Unlock()
		return nil
	}
	p.lns[ln] = struct{}{}
	p.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.shutdown.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.cfg.Log.Warn().Err(err).Dur("retry_in", backoff).Msg("tcp accept")
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("gateway: tcp accept: %w", err)
		}
		backoff = 0
		done, ok := p.cfg.Conns.Add(func() { c.Close() })
		if !ok {
			c.Close()
			continue
		}
		go func() {
			defer done()
			defer c.Close()
			p.handle(c)
		}()
	}
}

// Shutdown stops accepting, waits for open connections to end until ctx is
// done, then closes them. Connections that are still waiting for their env
// to start are abandoned at that point too.
func (p *TCPProxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.shutdown.Store(true)
	for ln := range p.lns {
		ln.Close()
	}
	p.mu.Unlock()
	err := p.cfg.Conns.Shutdown(ctx)
	p.cancel()
	return err
}

// handle serves one client connection to its end.
func (p *TCPProxy) handle(c net.Conn) {
	log := p.cfg.Log.With().Str("remote", c.RemoteAddr().String()).Str("listener", c.LocalAddr().String()).Logger()
	client, serverName, err := p.accept(c)
	if err != nil {
		log.Debug().Err(err).Msg("tcp handshake")
		return
	}
	label, err := ParseHost(serverName, p.cfg.Domains)
	if err != nil {
		log.Debug().Err(err).Msg("tcp: SNI names no env")
		return
	}
	env, port := SplitPort(label, p.cfg.PortSeparator, p.ports)
	if port == "" {
		port = p.cfg.Port
	}
	log = log.With().Str("env", env).Str("port", port).Logger()
	if err := p.admit(c, env, serverName); err != nil {
		log.Debug().Err(err).Msg("tcp: refused")
		return
	}
	if p.cfg.Cluster != nil && p.routeCluster(client, env, serverName, port, log) {
		return
	}
	lease, err := p.cfg.Envs.Acquire(p.ctx, env)
	if errors.Is(err, lifecycle.ErrNotAllowed) || errors.Is(err, lifecycle.ErrNoTemplate) {
		// Names anyone can make up: not worth more than a debug line.
		log.Debug().Err(err).Msg("tcp: no such env")
		return
	}
	if err != nil {
		log.Warn().Err(err).Msg("tcp: acquire env")
		return
	}
	defer lease.Release()
	addr, ok := lease.Port(port)
	if !ok {
		log.Warn().Msg("tcp: the env's template has no such port")
		return
	}
	backend, err := dialLease(p.ctx, &p.dialer, lease, "tcp", addr.String())
	if err != nil {
		log.Warn().Err(err).Str("addr", addr.String()).Msg("tcp: dial env")
		return
	}
	defer backend.Close()
	began := time.Now()
	up, down := splice(client, backend)
	log.Debug().Int64("bytes_up", up).Int64("bytes_down", down).Dur("took", time.Since(began)).
		Dur("cold", lease.ColdStart()).Msg("tcp connection")
}

// admit applies access control and the new-env limit to c, a connection
// for env by SNI serverName.
func (p *TCPProxy) admit(c net.Conn, env, serverName string) error {
	client := connAddr(c)
	local := isLocalHost(serverName)
	if err := p.cfg.Access.CheckConn(client, env, local); err != nil {
		return err
	}
	if p.cfg.NewEnvs.counts(p.known, env, local) {
		if wait := p.cfg.NewEnvs.take(client); wait > 0 {
			return fmt.Errorf("gateway: tcp: %s started too many new envs; next in %v", client, wait.Round(time.Second))
		}
	}
	return nil
}

// connAddr is c's peer address, unmapped; the zero Addr if unknown.
func connAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// accept reads the ClientHello (passthrough) or completes the handshake
// (terminate) within HandshakeTimeout, and returns the connection to
// splice and the SNI.
func (p *TCPProxy) accept(c net.Conn) (net.Conn, string, error) {
	c.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	defer c.SetDeadline(time.Time{})
	if p.tls == nil {
		raw, name, err := readClientHello(c)
		if err != nil {
			return nil, "", err
		}
		return &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(raw), c)}, name, nil
	}
	tc := tls.Server(c, p.tls)
	if err := tc.HandshakeContext(p.ctx); err != nil {
		return nil, "", err
	}
	return tc, tc.ConnectionState().ServerName, nil
}

// replayConn gives back the bytes already read before the rest.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *replayConn) CloseWrite() error { return closeWrite(c.Conn) }

type closeWriter interface{ CloseWrite() error }

// closeWrite half-closes c if it can (TCP FIN, or TLS close_notify), and
// closes it otherwise.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// splice copies both ways until both directions have ended. The end of one
// direction (EOF) is passed on as a half-close, so protocols that finish
// sending before they finish receiving work; an error in either direction
// closes both connections. It returns the bytes sent client->backend and
// back.
func splice(client, backend net.Conn) (up, down int64) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn, n *int64) {
		buf := buffers.Get().(*[]byte)
		defer buffers.Put(buf)
		var err error
		*n, err = io.CopyBuffer(dst, src, *buf)
		if err == nil {
			err = closeWrite(dst)
		}
		if err != nil {
			client.Close()
			backend.Close()
		}
	}
	wg.Go(func() { half(backend, client, &up) })
	wg.Go(func() { half(client, backend, &down) })
	wg.Wait()
	return up, down
}
