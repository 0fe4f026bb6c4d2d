package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
)

// TCPListenerConfig is one entry of tcp:, a listener for TLS over TCP
// (databases, gRPC without HTTP routing, anything) routed by SNI:
//
//	tcp:
//	  - listen: ":5432"
//	    port: db          # the template port; the SNI may name another
//	    tls: terminate    # or passthrough
type TCPListenerConfig struct {
	// Listen is the address, host:port. Required.
	Listen string `yaml:"listen"`
	// Port is the template port reached when the SNI names none
	// (<env>.<domain>); <port>--<env>.<domain> names one explicitly.
	// Default "": the template's default port.
	Port string `yaml:"port"`
	// TLS is terminate (default: the gateway's certificates, needs
	// tls.mode other than off) or passthrough (the env's server does the
	// TLS; only the SNI is read).
	TLS string `yaml:"tls"`
}

func (c *Config) setPortDefaults() {
	if c.PortSeparator == "" {
		c.PortSeparator = gateway.DefaultPortSeparator
	}
	for i := range c.TCP {
		if c.TCP[i].TLS == "" {
			c.TCP[i].TLS = string(gateway.TLSTerminate)
		}
	}
}

// validatePorts checks port_separator, the templates' port names against
// it, and tcp:.
func (c *Config) validatePorts() []error {
	var errs []error
	sepOK := len(c.PortSeparator) <= 8 && c.PortSeparator != ""
	for _, ch := range c.PortSeparator {
		sepOK = sepOK && (ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-')
	}
	if !sepOK {
		errs = append(errs, c.errAt("port_separator", "%q: want 1-8 characters of a-z, 0-9 and '-', so that <port><sep><env> stays one DNS label", c.PortSeparator))
	}
	named := map[string]bool{}
	for i, tc := range c.Templates {
		for name := range tc.Ports {
			named[name] = true
			if sepOK && strings.Contains(name, c.PortSeparator) {
				errs = append(errs, c.errAt(fmt.Sprintf("templates.%d.ports.%s", i, name), "port name contains port_separator %q", c.PortSeparator))
			}
		}
	}
	seen := map[string]bool{}
	for i, l := range c.TCP {
		p := fmt.Sprintf("tcp.%d", i)
		if _, _, err := net.SplitHostPort(l.Listen); err != nil {
			errs = append(errs, c.errAt(p+".listen", "%q: want host:port, e.g. :5432", l.Listen))
		} else if seen[l.Listen] {
			errs = append(errs, c.errAt(p+".listen", "%q used twice", l.Listen))
		}
		seen[l.Listen] = true
		switch gateway.TLSMode(l.TLS) {
		case gateway.TLSTerminate:
			if certs.Mode(c.TLS.Mode) == certs.ModeOff {
				errs = append(errs, c.errAt(p+".tls", "terminate needs certificates, but tls.mode is off; set tls.mode or use passthrough"))
			}
		case gateway.TLSPassthrough:
		default:
			errs = append(errs, c.errAt(p+".tls", "%q: want terminate or passthrough", l.TLS))
		}
		if l.Port != "" && !named[l.Port] {
			errs = append(errs, c.errAt(p+".port", "%q is not a port name of any template (templates[].ports)", l.Port))
		}
	}
	return errs
}
