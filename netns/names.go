package netns

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// RunDir is where named namespaces are bind-mounted, the same place
// iproute2 uses, so `ip netns` lists envgate's namespaces.
const RunDir = "/run/netns"

// PeerIfName is the name of the veth end inside every namespace. Namespaces
// are separate name spaces for links, so every sandbox can use the same one.
const PeerIfName = "eth0"

var (
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)
	idRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidatePrefix reports whether p can prefix namespace and link names: a
// lowercase letter then up to 7 letters or digits. The short limit keeps
// veth names within the kernel's 15-byte IFNAMSIZ, and the absence of '-'
// makes "<prefix>-" an unambiguous marker of ownership.
func ValidatePrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("netns: prefix %q: want 1-8 characters [a-z0-9] starting with a letter", p)
	}
	return nil
}

// validateID checks netns's own rules for the ID a caller names a
// namespace by (it means nothing else to this package): 1-63 bytes of
// a-z, 0-9 and '-', not starting or ending with '-'. Such an ID is one
// file name under RunDir whatever the prefix (no '/', never "." or ".."),
// needs no quoting in `ip netns` commands, and cannot make "<prefix>-<id>"
// look like another prefix's name: prefixes hold no '-', so the first '-'
// ends the prefix.
func validateID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("netns: id %q: want 1-63 of a-z, 0-9 and '-' inside", id)
	}
	return nil
}

// nsName is the namespace's name under RunDir.
func nsName(prefix, id string) string { return prefix + "-" + id }

// hostIfName is the name of the root-namespace end of slot's veth pair. It
// derives from the slot index, never from the ID, to stay within 15 bytes.
func hostIfName(prefix string, slot int) string { return prefix + "-" + strconv.Itoa(slot) }

// parseHostIfName returns the slot of a host veth name owned by prefix.
func parseHostIfName(prefix, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// idFromNsName returns the ID of a namespace name owned by prefix.
func idFromNsName(prefix, name string) (string, bool) {
	id, ok := strings.CutPrefix(name, prefix+"-")
	if !ok || validateID(id) != nil {
		return "", false
	}
	return id, true
}
