package devserver

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
)

// Launch implements lifecycle.Launcher: it gives the data dir to the
// env's user, brings the env's checkout up to date (running the prepare
// steps when its commit moved), and spawns the dev server in its cgroup.
func (l *Launcher) Launch(ctx context.Context, req lifecycle.LaunchRequest) (lifecycle.Process, error) {
	t := req.Template
	cred, err := l.ownDataDir(req)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	disk := l.diskLog(req.Env)
	checkout, err := l.checkout(ctx, req, cred, disk)
	if err != nil {
		return nil, err
	}
	cmd, err := t.Expand(lifecycle.Vars{Name: req.Env, Port: t.Port, DataDir: req.DataDir, Checkout: checkout})
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	x := expanded{argv: cmd.Argv, dir: cmd.Dir, env: cmd.Env, fence: fenceOf(req)}
	if x.dir == "" {
		x.dir = req.DataDir
	}
	l.runAs(&x, cred, req)
	var cg envCgroup
	if l.cfg.CgroupParent != "" {
		if cg, err = newCgroup(l.cfg.CgroupParent, req.Env, cgroupResources(t)); err != nil {
			if t.Resources.Any() {
				return nil, err // its limits cannot be enforced
			}
			req.Log.Warn().Err(err).Msg("no cgroup for the env: its memory use is unknown to eviction")
			cg = nil
		}
	}
	proc, err := l.spawn(req.Sandbox, x, baseEnv(req), cg, req.Output, disk, req.Log.With().Str("stream", "output").Logger())
	if err != nil {
		if cg != nil {
			cg.remove()
		}
		return nil, fmt.Errorf("spawn %s: %w", x.argv[0], err)
	}
	req.Log.Debug().Int("pid", proc.Pid()).Strs("argv", x.argv).Str("addr", req.Sandbox.Addr().String()).Msg("dev server spawned")
	return proc, nil
}

// expanded is a template with its placeholders filled in for one env, and
// how it runs.
type expanded struct {
	argv []string
	dir  string
	env  map[string]string
	cred *credential // nil: the gateway's own user
	// Filled in by runAs.
	rlimits []rlimit
	iso     *isolation // nil: the host's pid and mount namespaces
	// fence, with iso: the init holds the env's data dir for its owner.
	fence *trampoline.Fence
}

// fenceOf is req's fence for the trampoline; nil without a claim.
func fenceOf(req lifecycle.LaunchRequest) *trampoline.Fence {
	if req.Fence.Token == 0 || req.Fence.Dir == "" {
		return nil
	}
	return &trampoline.Fence{Dir: req.Fence.Dir, Env: req.Env, Token: req.Fence.Token}
}

// baseEnv is the environment every process of an env starts with (the
// dev server and its prepare steps), before the template's own variables.
func baseEnv(req lifecycle.LaunchRequest) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return []string{
		"PATH=" + path,
		"HOME=" + req.DataDir,
		"PORT=" + strconv.Itoa(req.Template.Port),
		"ENVGATE_ENV=" + req.Env,
		"ENVGATE_DATA_DIR=" + req.DataDir,
	}
}

// cgroupResources are the limits of an env's cgroup: the template's
// Resources, with lifecycle.DefaultPids. Only the template's own
// Resources make a start fail when the env cannot have a cgroup.
func cgroupResources(t *lifecycle.Template) lifecycle.Resources {
	r := t.Resources
	if r.Pids == 0 {
		r.Pids = lifecycle.DefaultPids
	}
	return r
}
