package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/envgate/envgate/netns"
)

func TestConfigNetwork(t *testing.T) {
	const tmpl = "templates:\n  - name: app\n    allow_root: true\n    command: [x]\n    port: 3000\n"
	for _, tc := range []struct {
		name, yaml, wantErr string
		want                netns.Policy
	}{
		{"default", tmpl, "", netns.Policy{Name: "app", Egress: netns.EgressInternet}},
		{"none and host ports", tmpl + "    network: {egress: none, host_ports: [5432, 6379]}\n", "",
			netns.Policy{Name: "app", Egress: netns.EgressNone, HostPorts: []uint16{5432, 6379}}},
		{"allow list", tmpl + "    network:\n      egress: [\"203.0.113.0/24:443\", 198.51.100.7, \"10.1.2.3:5432\"]\n", "",
			netns.Policy{Name: "app", Egress: netns.EgressAllow, Allow: []netns.Destination{
				{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Port: 443},
				{Prefix: netip.MustParsePrefix("198.51.100.7/32")},
				{Prefix: netip.MustParsePrefix("10.1.2.3/32"), Port: 5432},
			}}},
		{"firewall off", "network: {firewall: \"off\"}\n" + tmpl, "", netns.Policy{Name: "app", Egress: netns.EgressInternet}},
		{"bad firewall", "network: {firewall: maybe}\n" + tmpl, "test.yaml:1: network.firewall: \"maybe\": want on or off", netns.Policy{}},
		{"bad egress", tmpl + "    network: {egress: everywhere}\n", "test.yaml:6: templates[0].network.egress: \"everywhere\"", netns.Policy{}},
		{"bad allow entry", tmpl + "    network:\n      egress: [\"2001:db8::/32\"]\n", "templates[0].network.egress[0]", netns.Policy{}},
		{"bad port", tmpl + "    network: {egress: [\"203.0.113.1:0\"]}\n", "templates[0].network.egress[0]", netns.Policy{}},
		{"bad host port", tmpl + "    network:\n      host_ports: [70000]\n", "test.yaml:7: templates[0].network.host_ports[0]", netns.Policy{}},
		{"unknown key", tmpl + "    network: {egres: none}\n", "egres", netns.Policy{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig("test.yaml", []byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.firewallPolicies(); len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
				t.Errorf("policies = %+v, want [%+v]", got, tc.want)
			}
			if c.firewallEnabled() == strings.Contains(tc.yaml, "firewall: \"off\"") {
				t.Errorf("firewallEnabled = %v", c.firewallEnabled())
			}
		})
	}
}
