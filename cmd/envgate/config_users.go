package main

import (
	"fmt"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
)

// UsersConfig is users:, the uids dev servers of templates with user:
// dynamic (the default) run as.
type UsersConfig struct {
	// UIDRange is "first-last": each env takes a uid of its own from it
	// (and a gid of the same number), kept while its data dir exists; it
	// owns that data dir and nothing else. Default 2000000000-2000016383,
	// away from regular users, systemd's DynamicUser range and the usual
	// /etc/subuid ranges. Gateways sharing a machine need ranges that do
	// not overlap.
	UIDRange string `yaml:"uid_range"`
}

// validateUsers checks users:.
func (c *Config) validateUsers() []error {
	if c.Users.UIDRange == "" {
		return nil
	}
	if _, err := devserver.ParseUIDRange(c.Users.UIDRange); err != nil {
		return []error{c.errAt("users.uid_range", "%v", err)}
	}
	return nil
}

// uidRange is users.uid_range, validated; zero for the default.
func (c *Config) uidRange() devserver.UIDRange {
	r, _ := devserver.ParseUIDRange(c.Users.UIDRange)
	return r
}

// lifecycleUser is the template's user as lifecycle takes it: unset means
// dynamic, unless allow_root asks for root (the gateway's own user).
func (tc *TemplateConfig) lifecycleUser() string {
	if tc.User == "" && !tc.AllowRoot {
		return lifecycle.DynamicUser
	}
	return tc.User
}

// userWarnings are what config --check says about templates whose envs
// are not kept apart from each other.
func (c *Config) userWarnings() []string {
	var out []string
	for i, tc := range c.Templates {
		p := fmt.Sprintf("templates.%d.user", i)
		switch u := tc.lifecycleUser(); u {
		case lifecycle.DynamicUser:
		case "":
			out = append(out, c.errAt(p, "envs of template %q run as root (allow_root): each can read and change every other env's data and processes, and the host's", tc.Name).Error())
		default:
			out = append(out, c.errAt(p, "envs of template %q all run as %q: each can read the others' data dirs and signal their processes; leave user unset (dynamic) for a uid per env", tc.Name, u).Error())
		}
	}
	return out
}
