package lifecycle

import (
	"net/netip"
	"strings"
	"testing"
)

func TestTemplatePorts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		port     int
		ports    map[string]int
		def      string
		wantPort int
		wantDef  string
		wantErr  string
	}{
		{name: "port only", port: 3000, wantPort: 3000},
		{name: "one named port", ports: map[string]int{"web": 3000}, wantPort: 3000, wantDef: "web"},
		{name: "default named", ports: map[string]int{"web": 3000, "db": 5432}, def: "db", wantPort: 5432, wantDef: "db"},
		{name: "default by port", port: 3000, ports: map[string]int{"web": 3000, "db": 5432}, wantPort: 3000, wantDef: "web"},
		{name: "ambiguous", ports: map[string]int{"web": 3000, "db": 5432}, wantErr: "default_port: required"},
		{name: "unknown default", ports: map[string]int{"web": 3000}, def: "api", wantErr: `default_port: "api" is not one of ports`},
		{name: "port disagrees", port: 80, ports: map[string]int{"web": 3000}, wantErr: "port: 80 disagrees"},
		{name: "port not among ports", port: 80, ports: map[string]int{"web": 3000, "db": 5432}, wantErr: "port: 80 is not one of ports"},
		{name: "bad number", ports: map[string]int{"web": 70000}, wantErr: "ports.web: 70000"},
		{name: "separator in name", ports: map[string]int{"a--b": 1}, wantErr: "ports.a--b"},
		{name: "uppercase name", ports: map[string]int{"Web": 1}, wantErr: "ports.Web"},
		{name: "default without ports", port: 3000, def: "web", wantErr: "default_port"},
		{name: "no port", wantErr: "port: 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := &Template{Name: "t", Command: []string{"x", "{{.Ports}}"}, Port: tc.port, Ports: tc.ports, DefaultPort: tc.def}
			err := tm.Prepare()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || tm.Port != tc.wantPort || tm.DefaultPort != tc.wantDef {
				t.Fatalf("Prepare: %v; Port %d DefaultPort %q, want %d %q", err, tm.Port, tm.DefaultPort, tc.wantPort, tc.wantDef)
			}
		})
	}
}

func TestLeasePortAndHasPort(t *testing.T) {
	tm := &Template{Name: "t", Match: "app-*", Command: []string{"x", "--api={{.Ports.api}}"}, Ports: map[string]int{"web": 3000, "api": 8080}, DefaultPort: "web"}
	if err := tm.Prepare(); err != nil {
		t.Fatal(err)
	}
	x, err := tm.Expand(Vars{Name: "app-1", Port: tm.Port})
	if err != nil || x.Argv[1] != "--api=8080" {
		t.Fatalf("expand {{.Ports.api}}: %q, %v", x.Argv, err)
	}
	l := &Lease{Addr: netip.MustParseAddrPort("10.0.0.2:3000"), e: &env{tmpl: tm}}
	for name, want := range map[string]string{"": "10.0.0.2:3000", "web": "10.0.0.2:3000", "api": "10.0.0.2:8080"} {
		if a, ok := l.Port(name); !ok || a.String() != want {
			t.Errorf("Port(%q) = %v, %v; want %s", name, a, ok, want)
		}
	}
	if _, ok := l.Port("db"); ok {
		t.Error(`Port("db") found a port the template does not name`)
	}
	m := &Manager{cfg: Config{Templates: []*Template{tm}}}
	if !m.HasPort("app-1", "api") || m.HasPort("app-1", "db") || m.HasPort("other", "api") {
		t.Error("HasPort answers wrong")
	}
}
