package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/envgate/envgate/netns/netnstest"
	"github.com/miekg/dns"
)

// loopbackResolver runs a DNS server on port 53 of a loopback address
// other than 127.0.0.1, as systemd-resolved's stub on 127.0.0.53 is, that
// knows one name, and returns a resolv.conf naming it (a resolv.conf has
// no port: the server must be on 53).
func loopbackResolver(t *testing.T, name, a string) (resolvConf string) {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	var addr string
	for try := 0; ; try++ {
		addr = fmt.Sprintf("127.53.%d.%d", rand.IntN(254)+1, rand.IntN(254)+1)
		var err error
		if pc, err = net.ListenPacket("udp4", addr+":53"); err == nil {
			if ln, err = net.Listen("tcp4", addr+":53"); err == nil {
				break
			}
			pc.Close()
		}
		if try == 10 {
			t.Fatalf("no free loopback address for a resolver: %v", err)
		}
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Name == name && q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(a)})
		} else {
			m.SetRcode(q, dns.RcodeNameError)
		}
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver "+addr+"\noptions edns0 trust-ad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return resolvConf
}

// TestEnvDNSWithLoopbackResolver: the host's resolver is on its loopback
// (the gateway reads a resolv.conf naming 127.53.x.y, as systemd-resolved's
// names 127.0.0.53). A dev server resolves a name the host's resolver
// knows through libc (getent hosts), with egress internet and with egress
// none (no default route: only its own /30 is reachable), because its
// /etc/resolv.conf names its veth's host end, whose queries the firewall
// hands to the forwarder.
func TestEnvDNSWithLoopbackResolver(t *testing.T) {
	netnstest.RequireRoot(t)
	const name, want = "db.envgate.test.", "192.0.2.99"
	t.Setenv(resolvConfVar, loopbackResolver(t, name, want))
	dev := `["/bin/sh", "-c", "{ cat /etc/resolv.conf; getent hosts db.envgate.test; echo status $?; } > {{.DataDir}}/resolved 2>&1; exec {{.Self}} demo-server --listen :{{.Port}} --name {{.Name}}"]`
	instance, cfg, addr := testInstance(t, 6, fmt.Sprintf(`templates:
  - name: open
    match: "open"
    command: %s
    port: 3000
    ready: {http: /healthz, timeout: 30s}
    allow_root: true
  - name: closed
    match: "closed"
    command: %s
    port: 3000
    ready: {http: /healthz, timeout: 30s}
    allow_root: true
    network: {egress: none}
`, dev, dev))
	defer netnstest.CheckClean(t, instance)
	g := startServe(t, cfg, addr)
	defer g.stop(t, syscall.SIGTERM)
	for _, env := range []string{"open", "closed"} {
		if code, body, _ := g.get(t, env+".localhost", "/healthz"); code != 200 {
			t.Fatalf("%s: %d %s", env, code, body)
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(cfg), "state", "envs", env, "resolved"))
		if err != nil {
			t.Fatal(err)
		}
		out := string(b)
		if !strings.Contains(out, want+" ") || !strings.Contains(out, "status 0") {
			t.Errorf("%s: getent hosts %s inside the env:\n%s", env, name, out)
		}
		// The nameserver is the env's host end (in the pool), not the
		// host's resolver.
		ns, _, _ := strings.Cut(strings.TrimPrefix(out, "# envgate: DNS through the gateway's forwarder at this env's host end\nnameserver "), "\n")
		if a, err := netip.ParseAddr(ns); err != nil || !netnstest.Pool(6).Contains(a) || a.As4()[3]%4 != 1 {
			t.Errorf("%s: the env's /etc/resolv.conf does not name its host end:\n%s", env, out)
		}
	}
}
