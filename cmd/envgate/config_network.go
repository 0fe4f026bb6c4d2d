package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/dnsfwd"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
)

// TemplateNetworkConfig is a template's network key: what its envs may
// reach. Everything else (the host, other envs, link-local and metadata
// addresses, private ranges) they never reach while network.firewall is
// on.
type TemplateNetworkConfig struct {
	// Egress is where the envs may connect beyond the host: internet
	// (default: any public address, masqueraded behind the host's),
	// none, or a list of "CIDR" or "CIDR:port" entries (TCP and UDP;
	// an entry may open a private range, e.g. a database at
	// 10.1.2.3/32:5432).
	Egress EgressConfig `yaml:"egress"`
	// HostPorts are ports of the host (TCP and UDP) the envs may connect
	// to, at their own host end address (the .1 of their /30), e.g.
	// [5432] for a database shared by all envs. Default none.
	HostPorts []int `yaml:"host_ports"`
}

// EgressConfig is internet, none, or an allow list.
type EgressConfig struct {
	Mode  string   // "internet", "none", or "allow" for a list
	Allow []string // the list's entries, as written
}

// UnmarshalYAML implements yaml.Unmarshaler: a word or a list.
func (e *EgressConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		e.Mode = "allow"
		return n.Decode(&e.Allow)
	}
	return n.Decode(&e.Mode)
}

// Values of network.firewall.
const (
	firewallOn  = "on"
	firewallOff = "off"
)

// firewallEnabled reports whether network.firewall is on (the default).
func (c *Config) firewallEnabled() bool { return c.Network.Firewall != firewallOff }

func (c *Config) validateNetwork() []error {
	var errs []error
	switch c.Network.Firewall {
	case "", firewallOn, firewallOff:
	default:
		errs = append(errs, c.errAt("network.firewall", "%q: want on or off", c.Network.Firewall))
	}
	for i, tc := range c.Templates {
		p := fmt.Sprintf("templates.%d.network", i)
		if _, err := tc.Network.policy(tc.Name); err != nil {
			if fe, ok := errors.AsType[*FieldError](err); ok {
				errs = append(errs, c.errAt(p+"."+fe.Field, "%w", fe.Err))
			}
		}
	}
	return errs
}

// policy is the firewall policy of template name. An error is a
// *FieldError whose Field is the dotted path under the template's network:
// section (egress.0).
func (n TemplateNetworkConfig) policy(name string) (netns.Policy, error) {
	p := netns.Policy{Name: name}
	switch n.Egress.Mode {
	case "", "internet":
		p.Egress = netns.EgressInternet
	case "none":
		p.Egress = netns.EgressNone
	case "allow":
		p.Egress = netns.EgressAllow
		for j, s := range n.Egress.Allow {
			d, err := parseDestination(s)
			if err != nil {
				return p, &FieldError{Field: "egress." + strconv.Itoa(j), Err: fmt.Errorf("%q: %w", s, err)}
			}
			p.Allow = append(p.Allow, d)
		}
	default:
		return p, &FieldError{Field: "egress", Err: fmt.Errorf("%q: want internet, none or a list of CIDR[:port] entries", n.Egress.Mode)}
	}
	for j, port := range n.HostPorts {
		if port < 1 || port > 65535 {
			return p, &FieldError{Field: "host_ports." + strconv.Itoa(j), Err: fmt.Errorf("%d: want a port 1-65535", port)}
		}
		p.HostPorts = append(p.HostPorts, uint16(port))
	}
	return p, nil
}

// parseDestination parses "203.0.113.0/24", "203.0.113.7" or either
// with ":port".
func parseDestination(s string) (netns.Destination, error) {
	var d netns.Destination
	addr, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return d, errors.New("want a port 1-65535 after the colon")
		}
		d.Port = uint16(n)
	}
	if strings.Contains(addr, "/") {
		p, err := netip.ParsePrefix(addr)
		if err != nil || !p.Addr().Is4() {
			return d, errors.New("want an IPv4 CIDR, e.g. 203.0.113.0/24 (IPv6 is closed to envs)")
		}
		d.Prefix = p.Masked()
		return d, nil
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return d, errors.New("want an IPv4 address or CIDR, e.g. 203.0.113.0/24 (IPv6 is closed to envs)")
	}
	d.Prefix = netip.PrefixFrom(a, 32)
	return d, nil
}

// firewallPolicies are the policies of the templates, one each, named
// after them.
func (c *Config) firewallPolicies() []netns.Policy {
	ps := make([]netns.Policy, 0, len(c.Templates))
	for _, tc := range c.Templates {
		p, _ := tc.Network.policy(tc.Name) // validated by LoadConfig
		ps = append(ps, p)
	}
	return ps
}

// openFirewall installs the instance's firewall unless network.firewall
// is off, with a DNS forwarder for the envs (package dnsfwd) when the
// host has resolvers. A kernel without nftables stops serve here: envs
// would run unconfined otherwise. stop ends the forwarder; dns says
// whether it runs (and so envs get a resolv.conf naming it: envdns.go).
func (c *Config) openFirewall(log zerolog.Logger) (_ *netns.Firewall, dns bool, stop func(), err error) {
	stop = func() {}
	if !c.firewallEnabled() {
		return nil, false, stop, nil
	}
	fc := netns.FirewallConfig{Prefix: c.Instance, Policies: c.firewallPolicies(), Pool: netip.MustParsePrefix(c.Network.Pool)}
	fwd, err := dnsfwd.Start(dnsfwd.Config{Clients: netip.MustParsePrefix(c.Network.Pool), HostResolvConf: hostResolvConf()})
	if err != nil {
		log.Warn().Err(err).Msg("no DNS for envs: they resolve names only through resolvers their egress reaches")
	} else {
		fc.DNSPort = fwd.Port()
		stop = func() { fwd.Close() }
		dns = true
	}
	fw, err := netns.OpenFirewall(fc)
	if err != nil {
		stop()
		if errors.Is(err, netns.ErrFirewallUnsupported) {
			err = fmt.Errorf("%w: envs would reach the host, each other and the network unconfined, so none are started; "+
				"load nf_tables (modprobe nf_tables) or set network.firewall: off to run them without a firewall", err)
		}
		return nil, false, func() {}, err
	}
	return fw, dns, stop, nil
}
