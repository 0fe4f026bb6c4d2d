// Package dnsfwd answers the DNS queries of sandboxes by passing them on
// to the host's own resolvers, which a sandbox cannot reach itself: a
// stub resolver on 127.0.0.53 (systemd-resolved) is on the host's
// loopback, and a resolver at a private address is closed by the
// sandbox's firewall policy.
//
// The firewall (netns.FirewallConfig.DNSPort) redirects every DNS query a
// sandbox sends, to whatever address, to this forwarder at the sandbox's
// host end, so the sandbox's resolv.conf may name any resolver. The
// forwarder answers only clients in the sandboxes' address pool. It
// caches nothing and changes nothing in the messages.
package dnsfwd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// ResolvConf is where the host's resolvers are read from by default.
const ResolvConf = "/etc/resolv.conf"

// exchangeTimeout bounds one query to one upstream.
const exchangeTimeout = 5 * time.Second

// Config says where to listen, whom to answer and where to ask.
type Config struct {
	// Addr is the UDP and TCP address to listen on; default
	// "0.0.0.0:0" (a free port, the same for both; see Port).
	Addr string
	// Clients is the prefix whose clients are answered (the address
	// pool); others get no answer. Required.
	Clients netip.Prefix
	// Upstreams are resolvers as host:port; default the nameservers of
	// the file HostResolvConf names.
	Upstreams []string
	// HostResolvConf is the file whose nameservers are the upstreams
	// when Upstreams is empty; default ResolvConf.
	HostResolvConf string
}

// Forwarder is a running DNS forwarder.
type Forwarder struct {
	cfg  Config
	port uint16
	udp  *dns.Server
	tcp  *dns.Server
	wg   sync.WaitGroup
}

// Start listens and serves until Close.
func Start(cfg Config) (*Forwarder, error) {
	if !cfg.Clients.IsValid() {
		return nil, errors.New("dnsfwd: Config.Clients is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = "0.0.0.0:0"
	}
	if cfg.HostResolvConf == "" {
		cfg.HostResolvConf = ResolvConf
	}
	if len(cfg.Upstreams) == 0 {
		cc, err := dns.ClientConfigFromFile(cfg.HostResolvConf)
		if err != nil {
			return nil, fmt.Errorf("dnsfwd: host resolvers: %w", err)
		}
		for _, s := range cc.Servers {
			cfg.Upstreams = append(cfg.Upstreams, net.JoinHostPort(s, cc.Port))
		}
		if len(cfg.Upstreams) == 0 {
			return nil, fmt.Errorf("dnsfwd: no nameserver in %s", cfg.HostResolvConf)
		}
	}
	f := &Forwarder{cfg: cfg}
	pc, ln, err := ListenPair(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dnsfwd: %w", err)
	}
	f.port = uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	// Start returns once both servers serve: a Shutdown before that
	// finds the server "not started", and the server then serves on, so
	// a Close soon after Start (a gateway whose start fails) would wait
	// for ever.
	var started sync.WaitGroup
	started.Add(2)
	udpUp, tcpUp := sync.OnceFunc(started.Done), sync.OnceFunc(started.Done)
	f.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(f.serve), NotifyStartedFunc: udpUp}
	f.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(f.serve), ReadTimeout: exchangeTimeout, NotifyStartedFunc: tcpUp}
	for _, s := range []struct {
		srv *dns.Server
		up  func()
	}{{f.udp, udpUp}, {f.tcp, tcpUp}} {
		f.wg.Go(func() {
			s.srv.ActivateAndServe()
			s.up() // a server that failed to start is not waited for
		})
	}
	started.Wait()
	return f, nil
}

// Port is the port the forwarder listens on, UDP and TCP.
func (f *Forwarder) Port() uint16 { return f.port }

// Close stops serving and waits for the servers to return.
func (f *Forwarder) Close() error {
	err := errors.Join(f.udp.Shutdown(), f.tcp.Shutdown())
	f.wg.Wait()
	return err
}

// serve answers one query: from an allowed client, the first upstream's
// answer (over the transport the client used); otherwise SERVFAIL, or
// nothing for a stranger.
func (f *Forwarder) serve(w dns.ResponseWriter, q *dns.Msg) {
	defer w.Close()
	if !f.allowed(w.RemoteAddr()) {
		return
	}
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	c := &dns.Client{Net: network, Timeout: exchangeTimeout}
	for _, up := range f.cfg.Upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
		r, _, err := c.ExchangeContext(ctx, q, up)
		cancel()
		if err == nil && r != nil {
			w.WriteMsg(r)
			return
		}
	}
	m := new(dns.Msg)
	m.SetRcode(q, dns.RcodeServerFailure)
	w.WriteMsg(m)
}

func (f *Forwarder) allowed(a net.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	addr, ok := netip.AddrFromSlice(ip)
	return ok && f.cfg.Clients.Contains(addr.Unmap())
}

// ListenPair listens on addr over UDP, then over TCP on the same port,
// as a DNS server does. With port 0 the kernel picks a free UDP port,
// which another socket may hold over TCP: then it tries another, a few
// times.
func ListenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return nil, nil, err
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || attempt == 15 {
			return nil, nil, err
		}
	}
}
