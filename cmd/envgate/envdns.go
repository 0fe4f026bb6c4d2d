package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/dnsfwd"
	"github.com/rs/zerolog"
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

// envMounts is lifecycle.Config.Mounts: with the forwarder (dns), each
// env's /etc/resolv.conf names its host end. Nil without it: envs see
// the host's.
func (c *Config) envMounts(dns bool, log zerolog.Logger) func(env string, sb lifecycle.Sandbox) []devserver.BindMount {
	if !dns {
		return nil
	}
	dir := filepath.Join(c.StateDir, "run", "resolv")
	return func(env string, sb lifecycle.Sandbox) []devserver.BindMount {
		s, ok := sb.(*netns.Sandbox)
		if !ok {
			return nil
		}
		path, err := writeEnvResolvConf(dir, s)
		if err != nil {
			log.Warn().Err(err).Str("env", env).Msg("no resolv.conf for the env: it resolves with the host's, which may name a resolver it cannot reach")
			return nil
		}
		return []devserver.BindMount{{Source: path, Target: "/etc/resolv.conf"}}
	}
}

// writeEnvResolvConf makes sure dir holds the resolv.conf of sb's host
// end and returns its path. One file per host-end address, not per env:
// the content depends only on the address, so a file is written once per
// slot of the pool and reused by every env that gets the slot later.
func writeEnvResolvConf(dir string, sb *netns.Sandbox) (string, error) {
	host := sb.Slot.Host
	path := filepath.Join(dir, host.String()+".conf")
	want := []byte("# envgate: DNS through the gateway's forwarder at this env's host end\nnameserver " + host.String() + "\n")
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, want) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	// Written aside and renamed: an env binding it meanwhile sees a whole file.
	tmp, err := os.CreateTemp(dir, ".resolv-*")
	if err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: already gone
	if _, err := tmp.Write(want); err != nil {
		tmp.Close()
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	return path, nil
}
