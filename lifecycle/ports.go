package lifecycle

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// preparePorts checks Port, Ports and DefaultPort, and leaves Port set to
// the default port's number.
func (t *Template) preparePorts() error {
	if len(t.Ports) == 0 {
		if t.DefaultPort != "" {
			return fieldError("default_port", "%q names no port: ports is empty", t.DefaultPort)
		}
		return checkPortNumber("port", t.Port)
	}
	names := make([]string, 0, len(t.Ports))
	for name, n := range t.Ports {
		if err := ValidPortName(name); err != nil {
			return fieldError("ports."+name, "%w", err)
		}
		if err := checkPortNumber("ports."+name, n); err != nil {
			return err
		}
		names = append(names, name)
	}
	slices.Sort(names)
	def := t.DefaultPort
	switch {
	case def != "":
		if _, ok := t.Ports[def]; !ok {
			return fieldError("default_port", "%q is not one of ports (%s)", def, strings.Join(names, ", "))
		}
	case len(names) == 1:
		def = names[0]
	case t.Port != 0:
		for _, name := range names {
			if t.Ports[name] == t.Port {
				def = name
				break
			}
		}
		if def == "" {
			return fieldError("port", "%d is not one of ports; set default_port instead", t.Port)
		}
	default:
		return fieldError("default_port", "required when ports names more than one port (one of %s)", strings.Join(names, ", "))
	}
	if t.Port != 0 && t.Port != t.Ports[def] {
		return fieldError("port", "%d disagrees with default port %s: %d; set one of them", t.Port, def, t.Ports[def])
	}
	t.DefaultPort = def
	t.Port = t.Ports[def]
	return nil
}

func checkPortNumber(field string, n int) error {
	if n < 1 || n > 65535 {
		return fieldError(field, "%d is not a TCP port (1-65535)", n)
	}
	return nil
}

// ValidPortName checks a port name: 1-20 of a-z and 0-9 in words joined
// by single hyphens. Port names become part of host labels; without "--"
// in them, a label <port>--<env> (the gateway's default form) splits at
// its first "--" unambiguously.
func ValidPortName(name string) error {
	ok := len(name) > 0 && len(name) <= 20 && name[0] != '-' && name[len(name)-1] != '-' &&
		!strings.Contains(name, "--")
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("port name %q: want 1-20 characters of a-z, 0-9 and single '-' inside", name)
	}
	return nil
}

// Port returns where the leased env's port called name answers. The empty
// name is the default port (Addr). ok is false when the env's template
// names no such port.
func (l *Lease) Port(name string) (netip.AddrPort, bool) {
	if name == "" || name == l.e.tmpl.DefaultPort {
		return l.Addr, true
	}
	n, ok := l.e.tmpl.Ports[name]
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(l.Addr.Addr(), uint16(n)), true
}

// HasPort reports whether env name would run from a template that names a
// port called port. It starts nothing and checks nothing else (the env
// may well be refused by Allow later).
func (m *Manager) HasPort(name, port string) bool {
	for _, t := range m.cfg.Templates {
		if t.Matches(name) {
			_, ok := t.Ports[port]
			return ok
		}
	}
	return false
}
