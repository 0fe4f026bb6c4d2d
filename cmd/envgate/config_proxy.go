package main

import (
	"fmt"
	"net/netip"

	"github.com/envgate/envgate/gateway"
)

// trustedProxies parses trusted_proxies; validate has checked each entry.
// A bare address is a network of one.
func (c *Config) trustedProxies() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		if p, err := parseProxy(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parseProxy(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// validateProxying checks trusted_proxies and each template's waiting and
// upstream.
func (c *Config) validateProxying() []error {
	var errs []error
	for i, s := range c.TrustedProxies {
		if _, err := parseProxy(s); err != nil {
			errs = append(errs, c.errAt(fmt.Sprintf("trusted_proxies.%d", i), "%q: want a CIDR such as 10.0.0.0/8 or an address", s))
		}
	}
	for i, tc := range c.Templates {
		p := fmt.Sprintf("templates.%d", i)
		switch tc.Waiting {
		case "", string(gateway.WaitPage), string(gateway.WaitBlock):
		default:
			errs = append(errs, c.errAt(p+".waiting", "%q: want page or block", tc.Waiting))
		}
		switch tc.Upstream {
		case "", string(gateway.UpstreamHTTP), string(gateway.UpstreamH2C):
		default:
			errs = append(errs, c.errAt(p+".upstream", "%q: want http or h2c", tc.Upstream))
		}
	}
	return errs
}

// gatewayTemplates are the gateway's settings of each template (waiting,
// upstream, cookies), by name: the keys of templates: that the gateway
// reads and the lifecycle never sees.
func (c *Config) gatewayTemplates() gateway.TemplateSettings {
	s := make(gateway.TemplateSettings, len(c.Templates))
	for _, tc := range c.Templates {
		s[tc.Name] = gateway.EnvSettings{
			Waiting:             gateway.Waiting(tc.Waiting),
			Upstream:            gateway.Upstream(tc.Upstream),
			SharedDomainCookies: tc.Cookies.SharedDomain,
		}
	}
	return s
}
