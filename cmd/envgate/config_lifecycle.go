package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/docker/go-units"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
)

// LimitsConfig is the limits: section: what the gateway runs at once.
type LimitsConfig struct {
	// MaxEnvs caps envs running (and starting or stopping). A start past
	// it stops the least recently used idle env first; with none idle the
	// request gets 503 with Retry-After. 0: no cap but the address pool.
	// Default 100, or 0 when every domain is a localhost one.
	MaxEnvs int `yaml:"max_envs"`
	// NewEnvsPerClient bounds the envs each client address may bring
	// into being (requests for envs the gateway does not know yet), as
	// starts/period: "20/1m", or "off". Past it: 429 with Retry-After.
	// Default 20/1m on domains other than localhost ones, where it is off.
	NewEnvsPerClient string `yaml:"new_envs_per_client"`
	// MaxStarting caps starts in progress at once; more wait their turn.
	// Default 2 × CPUs.
	MaxStarting int `yaml:"max_starting"`
	// MaxQueuedStarts caps starts waiting for a turn behind MaxStarting;
	// past it a request for an env that is not running gets 503 with
	// Retry-After at once. A queued start whose every request has gone
	// is dropped before it begins. Default 0: 4 × max_starting.
	MaxQueuedStarts int `yaml:"max_queued_starts"`
	// MinAvailableMemory is the floor of available memory (MemAvailable,
	// or the gateway's cgroup limit minus its use if lower): below it
	// idle envs are evicted and starts refused. Sizes like 512MiB, 1GiB.
	// Default 0: no floor.
	MinAvailableMemory Size `yaml:"min_available_memory"`
}

// Size is a byte count written as 512MiB, 1GiB, 100MB or 4096: KB, MB,
// GB, TB (and PB) are powers of 1000; K, KiB, M, MiB and the rest powers
// of 1024, as is every unit in lower case but kb, mb, gb, tb, pb. A
// fraction (1.5GiB) and a space before the unit (512 MiB) are allowed.
type Size int64

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	t := strings.Join(strings.Fields(s), " ") // "512 \t MiB" as "512 MiB"
	// go-units reads every unit as a power of 1024 (RAMInBytes) or of
	// 1000 (FromHumanSize); the unit says which.
	parse := units.RAMInBytes
	if u := t[strings.LastIndexAny(t, "0123456789. ")+1:]; len(u) == 2 && (u[1] == 'B' || u[1] == 'b') {
		parse = units.FromHumanSize
	}
	n, err := parse(t)
	// Past 2^62 the float's conversion wraps or saturates, by platform.
	if err != nil || n < 0 || n > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (write e.g. 512MiB, 1GiB)", s)
	}
	return Size(n), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// validateLimits checks the limits: section.
func (c *Config) validateLimits() []error {
	var errs []error
	if c.Limits.MaxEnvs < 0 {
		errs = append(errs, c.errAt("limits.max_envs", "%d: want 0 (no cap) or more", c.Limits.MaxEnvs))
	}
	if c.Limits.MaxStarting < 0 {
		errs = append(errs, c.errAt("limits.max_starting", "%d: want 0 (default, 2 × CPUs) or more", c.Limits.MaxStarting))
	}
	if c.Limits.MaxQueuedStarts < 0 {
		errs = append(errs, c.errAt("limits.max_queued_starts", "%d: want 0 (default, 4 × max_starting) or more", c.Limits.MaxQueuedStarts))
	}
	if c.Network.WarmPool < 0 || c.Network.WarmPool > 1000 {
		errs = append(errs, c.errAt("network.warm_pool", "%d: want 0 (none) to 1000", c.Network.WarmPool))
	}
	errs = append(errs, c.validateResources()...)
	return append(errs, c.validateOnRestart()...)
}

// lifecycleLimits maps the limits: section to lifecycle.Limits.
func (c *Config) lifecycleLimits() lifecycle.Limits {
	return lifecycle.Limits{
		MaxEnvs:            c.Limits.MaxEnvs,
		MaxStarting:        c.Limits.MaxStarting,
		MaxQueuedStarts:    c.Limits.MaxQueuedStarts,
		MinAvailableMemory: int64(c.Limits.MinAvailableMemory),
	}
}

// on_restart values.
const (
	onRestartAdopt = "adopt"
	onRestartClean = "clean"
)

// validateOnRestart checks on_restart, defaulting it to adopt.
func (c *Config) validateOnRestart() []error {
	switch c.OnRestart {
	case "":
		c.OnRestart = onRestartAdopt
	case onRestartAdopt, onRestartClean:
	default:
		return []error{c.errAt("on_restart", "%q: want adopt or clean", c.OnRestart)}
	}
	return nil
}

// cgroupParent is the cgroup under which each env gets its own.
func (c *Config) cgroupParent() string { return "envgate/" + c.Instance }

// stateFile is where the gateway records its running envs.
func (c *Config) stateFile() string {
	return filepath.Join(c.runDir(), c.Instance+".state.json")
}

// recoverEnvs deals with what a crashed earlier run left: with on_restart
// adopt, envs still alive are adopted; everything else of this instance
// (namespaces, veths, processes) is removed.
func recoverEnvs(cfg *Config, envs *lifecycle.Manager, nsm *netns.Manager, log zerolog.Logger) {
	adopted, err := envs.Recover(cfg.OnRestart == onRestartAdopt)
	if err != nil {
		log.Warn().Err(err).Msg("some envs of the earlier run could not be adopted")
	}
	if len(adopted) > 0 {
		log.Info().Strs("envs", adopted).Msg("adopted envs left running by the earlier run")
	}
	keep := make(map[string]bool, len(adopted))
	for _, n := range adopted {
		keep[n] = true
	}
	if left, err := nsm.GC(keep); err != nil {
		log.Error().Err(err).Msg("cleaning up after an earlier run")
	} else if !left.Empty() {
		log.Warn().Strs("namespaces", left.Namespaces).Strs("links", left.Links).Int("processes", left.Processes).
			Msg("removed what an earlier run left behind")
	}
}

// ResourcesConfig is a template's resources: section: limits on each env,
// enforced through a cgroup of its own (v2 where the host has it, else
// v1). Zero or absent means no limit.
type ResourcesConfig struct {
	// Memory the env's processes may use together, e.g. 512MiB; past it
	// the kernel OOM-kills inside the env only.
	Memory Size `yaml:"memory"`
	// CPUs is the CPU time the env may use, in CPUs, e.g. 1 or 0.5.
	CPUs float64 `yaml:"cpus"`
	// Pids caps the env's processes and threads, e.g. 512.
	Pids int64 `yaml:"pids"`
}

func (r ResourcesConfig) lifecycle() lifecycle.Resources {
	return lifecycle.Resources{Memory: int64(r.Memory), CPUs: r.CPUs, Pids: r.Pids}
}

// validateResources checks every template's resources: section.
func (c *Config) validateResources() []error {
	var errs []error
	for i, tc := range c.Templates {
		p := fmt.Sprintf("templates.%d.resources.", i)
		if tc.Resources.CPUs < 0 {
			errs = append(errs, c.errAt(p+"cpus", "%v: want a positive number of CPUs, e.g. 0.5", tc.Resources.CPUs))
		}
		if tc.Resources.Pids < 0 {
			errs = append(errs, c.errAt(p+"pids", "%d: want a positive count", tc.Resources.Pids))
		}
		if m := tc.Resources.Memory; m > 0 && m < 4<<20 {
			errs = append(errs, c.errAt(p+"memory", "%d bytes: too small for any dev server (write e.g. 512MiB)", m))
		}
	}
	return errs
}
