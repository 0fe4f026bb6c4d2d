package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/envgate/envgate/gateway"
)

func TestProxyingKeys(t *testing.T) {
	c := load(t, `
listen: {http: ":80", h2c: true}
trusted_proxies: [10.0.0.0/8, "192.0.2.7", "2001:db8::/32"]
templates:
  - name: api
    match: "grpc-*"
    command: [server]
    allow_root: true
    port: 50051
    upstream: h2c
    waiting: block
  - name: web
    command: [npm, run, dev]
    allow_root: true
    port: 3000
`)
	if !c.Listen.H2C {
		t.Error("listen.h2c not read")
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32"),
	}
	if got := c.trustedProxies(); !slices.Equal(got, want) {
		t.Errorf("trusted proxies %v, want %v", got, want)
	}
	gs := c.gatewayTemplates()
	if api := gs["api"]; api.Upstream != gateway.UpstreamH2C || api.Waiting != gateway.WaitBlock {
		t.Errorf("template api: %+v, want upstream h2c, waiting block", api)
	}
	if web, ok := gs["web"]; !ok || web != (gateway.EnvSettings{}) {
		t.Errorf("template web: %+v (listed %v); want the defaults", web, ok)
	}
}

func TestProxyingKeyErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"trusted_proxies: [10.0.0.0/33]\n", "trusted_proxies[0]"},
		{"trusted_proxies: [proxy.internal]\n", "trusted_proxies[0]"},
		{"templates: [{name: a, command: [x], port: 1, waiting: spinner}]\n", "templates[0].waiting"},
		{"templates: [{name: a, command: [x], port: 1, upstream: grpc}]\n", "templates[0].upstream"},
	} {
		_, err := loadString(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %s", tc.yaml, err, tc.want)
		}
	}
}
