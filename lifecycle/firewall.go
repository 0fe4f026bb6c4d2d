package lifecycle

import (
	"strings"

	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
)

// SandboxPolicy puts the sandboxes of a NetnsNetwork under the
// instance's firewall: each gets the policy of the template its env
// runs, from creation (or from the rename that gives a warm spare its
// env) until it is destroyed.
type SandboxPolicy struct {
	// Firewall is the instance's firewall; nil when the config turns it
	// off, and then every env start logs a warning.
	Firewall *netns.Firewall
	// PolicyOf names the firewall policy of env name ("" for none: a
	// warm spare, whose template is not known yet).
	PolicyOf func(name string) string
	// Log is where the warnings go.
	Log zerolog.Logger
}

// setup is what the sandbox of env name needs done as it is made for
// its policy (netns.Manager.CreateWith), so that attach then only puts it
// into its policy's set.
func (p *SandboxPolicy) setup(name string) (netns.Setup, error) {
	if p == nil || p.Firewall == nil {
		return netns.Setup{}, nil
	}
	return p.Firewall.Setup(p.policyOf(name))
}

// attach gives sb the policy of env name.
func (p *SandboxPolicy) attach(sb *netns.Sandbox, name string) error {
	if p == nil {
		return nil
	}
	if p.Firewall == nil {
		p.Log.Warn().Str("env", name).Msg("network.firewall is off: this env can reach the host, other envs and the network as the host's own processes can")
		return nil
	}
	return p.Firewall.Attach(sb, p.policyOf(name))
}

// policyOf is the name of env name's policy.
func (p *SandboxPolicy) policyOf(name string) string {
	if p.PolicyOf == nil {
		return ""
	}
	return p.PolicyOf(name)
}

// detach takes sb out of its policy: its host link's name comes back with
// the next sandbox in its slot.
func (p *SandboxPolicy) detach(sb *netns.Sandbox) error {
	if p == nil || p.Firewall == nil {
		return nil
	}
	return p.Firewall.Detach(sb)
}

// TemplatePolicy returns a SandboxPolicy.PolicyOf that names each env's
// policy after its template (the first that matches, as the Manager
// picks it); warm spares get none until their rename.
func TemplatePolicy(templates []*Template) func(name string) string {
	return func(name string) string {
		if strings.HasPrefix(name, spareMarker) {
			return ""
		}
		for _, t := range templates {
			if t.Matches(name) {
				return t.Name
			}
		}
		return ""
	}
}

// detachAll is detach for many sandboxes at once.
func (p *SandboxPolicy) detachAll(sbs []*netns.Sandbox) error {
	if p == nil || p.Firewall == nil {
		return nil
	}
	return p.Firewall.DetachAll(sbs)
}
