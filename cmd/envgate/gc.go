package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/netns"
	"github.com/spf13/cobra"
)

func newGCCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove namespaces, veths and processes a crashed gateway left behind",
		Long: `Remove every network namespace, host veth end and process carrying this
instance's prefix (config key instance, default "envgate"), and its nftables
table (envgate-<instance>), turning net.ipv4.ip_forward back off if envgate
turned it on. Nothing of other
instances is touched. Refuses while a gateway of the same instance runs,
since those would be its live envs. 'envgate serve' does the same at start-up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfig(g.config)
			if err != nil {
				return err
			}
			if err := requireRoot("envgate gc"); err != nil {
				return err
			}
			unlock, err := lockInstance(cfg)
			if err != nil {
				return err
			}
			defer unlock()
			m, err := netns.New(netns.Config{Prefix: cfg.Instance, Pool: netip.MustParsePrefix(cfg.Network.Pool)})
			if err != nil {
				return err
			}
			left, err := m.GC(nil)
			cgs, cerr := devserver.RemoveCgroups(cfg.cgroupParent())
			// The firewall table, and ip_forward if envgate turned it on.
			ferr := netns.RemoveFirewall(cfg.Instance)
			if errors.Is(ferr, netns.ErrFirewallUnsupported) {
				ferr = nil // no nftables: no table to remove either
			}
			err = errors.Join(err, cerr, ferr)
			out := cmd.OutOrStdout()
			for _, c := range cgs {
				fmt.Fprintln(out, "removed cgroup", c)
			}
			for _, n := range left.Namespaces {
				fmt.Fprintln(out, "removed namespace", n)
			}
			for _, l := range left.Links {
				fmt.Fprintln(out, "removed link", l)
			}
			if left.Processes > 0 {
				fmt.Fprintln(out, "killed", left.Processes, "processes")
			}
			if left.Empty() && len(cgs) == 0 && err == nil {
				fmt.Fprintf(out, "nothing left behind by instance %q\n", cfg.Instance)
			}
			return err
		},
	}
}
