package pebbletest

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The TSIG key a DNS takes updates signed with.
const (
	TSIGKey    = "envgate-key."
	TSIGSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==" // base64
)

// DNS is a small authoritative server for one zone on loopback: it
// applies TSIG-signed RFC 2136 updates (TXT only; signed with TSIGKey and
// TSIGSecret, HMAC-SHA256), answers TXT and SOA from its store and A with
// 127.0.0.1 for any name, so Pebble can use it as its resolver for DNS-01
// validation (Options.DNS) and certmagic as the RFC 2136 server of a
// wildcard (tls.wildcard).
type DNS struct {
	Addr string // host:port, UDP and TCP
	zone string

	mu      sync.Mutex
	txt     map[string][]string // guarded by mu; lower-case FQDN -> values
	added   int                 // guarded by mu; TXT records ever added
	refused int                 // guarded by mu; updates refused for bad or missing TSIG
}

// StartDNS serves zone on a loopback port (UDP and TCP) until the test
// ends.
func StartDNS(t testing.TB, zone string) *DNS {
	t.Helper()
	s := &DNS{zone: dns.Fqdn(zone), txt: map[string][]string{}}
	secrets := map[string]string{TSIGKey: TSIGSecret}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 { // UDP and TCP on one port; retry if TCP's is taken
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no loopback port free for both UDP and TCP")
	}
	s.Addr = pc.LocalAddr().String()
	// miekg/dns refuses UPDATE by default; this server exists to take them.
	accept := func(dh dns.Header) dns.MsgAcceptAction {
		if dh.Bits&(1<<15) != 0 { // a response
			return dns.MsgIgnore
		}
		return dns.MsgAccept
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: pc, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: ln, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept, NotifyStartedFunc: notify}
	failed := make(chan error, 2)
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{udp, tcp} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
			}
		}()
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = udp.ShutdownContext(ctx)
		_ = tcp.ShutdownContext(ctx)
		// Shutdown does nothing to a server that has not marked itself
		// started yet (a test that fails right after startTestDNS can get
		// here first); closing its sockets ends it either way.
		_ = pc.Close()
		_ = ln.Close()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Error("test DNS server still serving 30s after shutdown")
		}
	})
	timeout := time.After(30 * time.Second)
	for range 2 {
		select {
		case <-started:
		case err := <-failed:
			t.Fatalf("test DNS server on %s: %v", s.Addr, err)
		case <-timeout:
			t.Fatalf("test DNS server on %s not serving after 30s", s.Addr)
		}
	}
	return s
}

func (s *DNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if r.Opcode == dns.OpcodeUpdate {
		s.update(w, r, m)
		return
	}
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Rrtype: q.Qtype, Ttl: 1}
	s.mu.Lock()
	switch q.Qtype {
	case dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
	case dns.TypeTXT:
		for _, v := range s.txt[name] {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{v}})
		}
	case dns.TypeSOA:
		if name == s.zone {
			m.Answer = append(m.Answer, &dns.SOA{Hdr: hdr, Ns: "ns." + s.zone, Mbox: "ops." + s.zone, Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: 1})
		}
	}
	s.mu.Unlock()
	_ = w.WriteMsg(m)
}

func (s *DNS) update(w dns.ResponseWriter, r *dns.Msg, m *dns.Msg) {
	if r.IsTsig() == nil || w.TsigStatus() != nil {
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		m.Rcode = dns.RcodeNotAuth
		_ = w.WriteMsg(m)
		return
	}
	if len(r.Question) != 1 || strings.ToLower(r.Question[0].Name) != s.zone {
		m.Rcode = dns.RcodeNotZone
	} else {
		s.mu.Lock()
		for _, rr := range r.Ns {
			txt, ok := rr.(*dns.TXT)
			if !ok {
				continue
			}
			name := strings.ToLower(txt.Hdr.Name)
			v := strings.Join(txt.Txt, "")
			switch txt.Hdr.Class {
			case dns.ClassINET:
				s.txt[name] = append(s.txt[name], v)
				s.added++
			case dns.ClassNONE: // delete this exact record
				s.txt[name] = slices.DeleteFunc(s.txt[name], func(x string) bool { return x == v })
			}
		}
		s.mu.Unlock()
	}
	m.SetTsig(TSIGKey, dns.HmacSHA256, 300, time.Now().Unix())
	_ = w.WriteMsg(m)
}

// Records returns the TXT values stored for name.
func (s *DNS) Records(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.txt[strings.ToLower(dns.Fqdn(name))])
}

// Counts reports the TXT records ever added, and the updates refused for
// a bad or missing TSIG signature.
func (s *DNS) Counts() (added, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added, s.refused
}
