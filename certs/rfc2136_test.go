package certs

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

func TestRFC2136Provider(t *testing.T) {
	srv := pebbletest.StartDNS(t, "envgate.test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := &RFC2136Provider{Nameserver: srv.Addr, TSIGKeyName: pebbletest.TSIGKey, TSIGAlgorithm: dns.HmacSHA256, TSIGSecret: pebbletest.TSIGSecret}
	long := strings.Repeat("v", 300) // more than one 255-byte string
	recs := []libdns.Record{
		libdns.TXT{Name: "_acme-challenge.dev", Text: "token-1", TTL: time.Minute},
		libdns.TXT{Name: "_acme-challenge.dev", Text: long},
	}
	if _, err := p.AppendRecords(ctx, "envgate.test.", recs); err != nil {
		t.Fatal(err)
	}
	if got := srv.Records("_acme-challenge.dev.envgate.test"); !slices.Equal(got, []string{"token-1", long}) {
		t.Fatalf("records after append: %q", got)
	}
	if _, err := p.DeleteRecords(ctx, "envgate.test", recs[:1]); err != nil {
		t.Fatal(err)
	}
	if got := srv.Records("_acme-challenge.dev.envgate.test"); !slices.Equal(got, []string{long}) {
		t.Fatalf("records after delete: %q", got)
	}

	for name, bad := range map[string]*RFC2136Provider{
		"unsigned":   {Nameserver: srv.Addr},
		"wrong key":  {Nameserver: srv.Addr, TSIGKeyName: pebbletest.TSIGKey, TSIGAlgorithm: dns.HmacSHA256, TSIGSecret: "d3Jvbmc="},
		"wrong zone": {Nameserver: srv.Addr, TSIGKeyName: pebbletest.TSIGKey, TSIGAlgorithm: dns.HmacSHA256, TSIGSecret: pebbletest.TSIGSecret},
	} {
		zone := "envgate.test."
		if name == "wrong zone" {
			zone = "other.test."
		}
		if _, err := bad.AppendRecords(ctx, zone, recs[:1]); err == nil {
			t.Errorf("%s: update accepted", name)
		}
	}
	if _, refused := srv.Counts(); refused < 1 {
		t.Error("the server never saw a refused update; the negative cases test nothing")
	}
	var dnsErr *net.OpError
	dead := &RFC2136Provider{Nameserver: "127.0.0.1:1"}
	if _, err := dead.AppendRecords(ctx, "envgate.test.", recs[:1]); !errors.As(err, &dnsErr) {
		t.Errorf("unreachable server: %v, want a network error", err)
	}
}
