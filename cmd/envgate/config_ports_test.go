package main

import (
	"strings"
	"testing"
)

func TestConfigPortsAndTCP(t *testing.T) {
	const tmpl = "templates:\n  - {name: app, allow_root: true, command: [x], ports: {web: 3000, db: 5432}, default_port: web}\n"
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"ports and tcp", tmpl + "tls: {mode: internal}\ntcp:\n  - {listen: \":5432\", port: db}\n  - {listen: \":6432\", port: db, tls: passthrough}\n", ""},
		{"custom separator", tmpl + "port_separator: -x-\n", ""},
		{"bad separator", tmpl + "port_separator: \"a.b\"\n", "port_separator"},
		{"separator inside a port name", "port_separator: \"-\"\ntemplates:\n  - {name: app, command: [x], ports: {my-db: 5432}}\n", "templates[0].ports.my-db: port name contains port_separator"},
		{"terminate without certificates", tmpl + "tls: {mode: \"off\"}\ntcp: [{listen: \":5432\", port: db}]\n", "tcp[0].tls: terminate needs certificates"},
		{"unknown port", tmpl + "tcp: [{listen: \":5432\", port: redis, tls: passthrough}]\n", "tcp[0].port"},
		{"bad mode", tmpl + "tcp: [{listen: \":5432\", tls: sometimes}]\n", "tcp[0].tls"},
		{"bad listen", tmpl + "tcp: [{listen: \"5432\", tls: passthrough}]\n", "tcp[0].listen"},
		{"ambiguous default", "templates:\n  - {name: app, command: [x], ports: {web: 3000, db: 5432}}\n", "default_port: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig("test.yaml", []byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.PortSeparator == "" || (len(c.TCP) > 0 && c.TCP[0].TLS != "terminate") {
					t.Errorf("defaults not applied: separator %q, tcp %+v", c.PortSeparator, c.TCP)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
