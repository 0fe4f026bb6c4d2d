package main

import (
	"os"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/dnsfwd"
)

// DNS inside envs. The firewall redirects every DNS query an env sends to
// the forwarder on the host (netns/dnsfwd), but only a query that leaves
// the env: one to 127.0.0.53, which the host's /etc/resolv.conf names
// under systemd-resolved, stays on the env's own loopback and finds
// nothing. So each env's mount namespace gets a resolv.conf of its own,
// bound read-only over /etc/resolv.conf, that names the host end of its
// veth. Not one fixed address for all: an env with egress none has no
// default route, so only its own /30 is reachable, and a query to any
// other address would fail before the redirect could see it.

// resolvConfVar names the file whose nameservers the forwarder asks
// (default /etc/resolv.conf), e.g. /run/systemd/resolve/resolv.conf to
// skip systemd-resolved's stub.
const resolvConfVar = "ENVGATE_HOST_RESOLV_CONF"

// hostResolvConf is the host's resolv.conf the forwarder reads.
func hostResolvConf() string {
	if p := os.Getenv(resolvConfVar); p != "" {
		return p
	}
	return dnsfwd.ResolvConf
}

// envMounts is devserver.Config.Mounts: with the forwarder (dns), each
// env's /etc/resolv.conf names its host end. The file is the env's own,
// made in its mount namespace at its start: nothing is written on the
// host. Nil without the forwarder: envs see the host's.
func (c *Config) envMounts(dns bool) func(env string, sb lifecycle.Sandbox) []devserver.BindMount {
	if !dns {
		return nil
	}
	return func(env string, sb lifecycle.Sandbox) []devserver.BindMount {
		s, ok := sb.(*netns.Sandbox)
		if !ok {
			return nil
		}
		host := s.Slot.Host.String()
		return []devserver.BindMount{{Target: "/etc/resolv.conf",
			Content: "# envgate: DNS through the gateway's forwarder at this env's host end\nnameserver " + host + "\n"}}
	}
}
