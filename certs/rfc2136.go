package certs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// RFC2136Provider is a libdns provider (AppendRecords, DeleteRecords) that
// sends RFC 2136 dynamic updates, signed with TSIG when a key is set. It
// stands in for github.com/libdns/rfc2136, which the module proxy does not
// serve here; it covers what DNS-01 needs (adding and removing TXT records)
// and any other type miekg/dns can parse from libdns's RR form.
type RFC2136Provider struct {
	Nameserver    string // host:port of the primary
	TSIGKeyName   string // fully qualified, e.g. "envgate."; empty: unsigned
	TSIGAlgorithm string // e.g. dns.HmacSHA256
	TSIGSecret    string // base64
}

// AppendRecords adds recs to zone in one update message.
func (p *RFC2136Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rrs, err := toDNSRRs(zone, recs)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	m.Insert(rrs)
	if err := p.send(ctx, m); err != nil {
		return nil, fmt.Errorf("certs: rfc2136 add to %s: %w", zone, err)
	}
	return recs, nil
}

// DeleteRecords removes exactly recs (name, type and data) from zone.
func (p *RFC2136Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rrs, err := toDNSRRs(zone, recs)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	m.Remove(rrs)
	if err := p.send(ctx, m); err != nil {
		return nil, fmt.Errorf("certs: rfc2136 delete from %s: %w", zone, err)
	}
	return recs, nil
}

func (p *RFC2136Provider) send(ctx context.Context, m *dns.Msg) error {
	// TCP: an update is not idempotent enough to resend blindly over UDP,
	// and TSIG-signed messages can exceed 512 bytes.
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	if p.TSIGKeyName != "" {
		name := dns.Fqdn(p.TSIGKeyName)
		c.TsigSecret = map[string]string{name: p.TSIGSecret}
		m.SetTsig(name, dns.Fqdn(p.TSIGAlgorithm), 300, time.Now().Unix())
	}
	r, _, err := c.ExchangeContext(ctx, m, p.Nameserver)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("server answered %s", dns.RcodeToString[r.Rcode])
	}
	return nil
}

func toDNSRRs(zone string, recs []libdns.Record) ([]dns.RR, error) {
	out := make([]dns.RR, 0, len(recs))
	for _, rec := range recs {
		r := rec.RR()
		name := libdns.AbsoluteName(r.Name, dns.Fqdn(zone))
		ttl := uint32(r.TTL / time.Second)
		if ttl == 0 {
			ttl = 60
		}
		hdr := dns.RR_Header{Name: dns.Fqdn(name), Class: dns.ClassINET, Ttl: ttl}
		if strings.EqualFold(r.Type, "TXT") {
			hdr.Rrtype = dns.TypeTXT
			out = append(out, &dns.TXT{Hdr: hdr, Txt: splitTXT(r.Data)})
			continue
		}
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", hdr.Name, ttl, r.Type, r.Data))
		if err != nil {
			return nil, fmt.Errorf("certs: rfc2136 record %s %s: %w", r.Name, r.Type, err)
		}
		out = append(out, rr)
	}
	return out, nil
}

// splitTXT cuts long TXT data into the 255-byte strings the wire format needs.
func splitTXT(s string) []string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}

func newDNS01Solver(w *WildcardConfig, zl *zap.Logger) *certmagic.DNS01Solver {
	provider := w.Provider
	if provider == nil {
		provider = &RFC2136Provider{
			Nameserver:    w.Nameserver,
			TSIGKeyName:   w.TSIGKeyName,
			TSIGAlgorithm: w.TSIGAlgorithm,
			TSIGSecret:    w.TSIGSecret,
		}
	}
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        provider,
		Resolvers:          w.Resolvers,
		PropagationTimeout: w.PropagationTimeout,
		Logger:             zl,
	}}
}
