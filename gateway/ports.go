package gateway

import (
	"strings"

	"github.com/envgate/envgate/lifecycle/envname"
)

// DefaultPortSeparator joins a port name to an env name in one DNS label:
// api--feature-x.dev.example.com reaches port "api" of env feature-x.
const DefaultPortSeparator = "--"

// PortNamer is what SplitPort asks to tell a port name from part of an env
// name. *lifecycle.Manager implements it.
type PortNamer interface {
	// HasPort reports whether env name runs from a template that has a
	// port called port.
	HasPort(name, port string) bool
}

// SplitPort splits a host label into an env name and a port name ("" for
// the env's default port).
//
// The form is <port><sep><env>, which stays one DNS label so one wildcard
// certificate (*.dev.example.com) covers every port of every env. Env
// names may themselves contain the separator (feature--x, or IDNA labels
// such as xn--bcher-kva), so the label splits at the first separator only
// when what precedes it is a port that the template of what follows it
// names; otherwise the whole label is the env name. A nil namer or empty
// sep never splits.
func SplitPort(label, sep string, namer PortNamer) (env, port string) {
	if sep == "" || namer == nil {
		return label, ""
	}
	p, rest, ok := strings.Cut(label, sep)
	if !ok || p == "" || rest == "" || !envname.Valid(rest) || !namer.HasPort(rest, p) {
		return label, ""
	}
	return rest, p
}
