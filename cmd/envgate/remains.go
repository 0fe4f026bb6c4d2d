package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/lifecycle/sources"
	"github.com/rs/zerolog"
)

// envRemains removes what a destroyed env owns outside the lifecycle
// manager (lifecycle.Config.AfterDestroy): its worktree (source.checkouts)
// and its certificate, whoever destroyed it (a closed pull request,
// destroy_after, envgate destroy, the dashboard).
type envRemains struct {
	git   *sources.Git                  // nil without source.checkouts
	certs atomic.Pointer[certs.Manager] // set once serve has made it; nil with tls off
	// others, in cluster mode, tells the other nodes that env was
	// destroyed here, so that they drop its certificate from memory
	// (the stored one Forget removed is theirs too). Set before any
	// destroy.
	others func(env string)
	log    zerolog.Logger
}

func (c *Config) newEnvRemains(src sources.Source, log zerolog.Logger) *envRemains {
	r := &envRemains{log: log}
	if c.checkoutsOf(src) != nil {
		r.git = src.(*sources.Git)
	}
	return r
}

// forgetTimeout bounds the removal of a destroyed env's certificate.
const forgetTimeout = 30 * time.Second

func (r *envRemains) remove(env string) {
	ctx, cancel := context.WithTimeout(context.Background(), forgetTimeout)
	defer cancel()
	if r.git != nil {
		if err := r.git.RemoveCheckout(ctx, env); err != nil {
			r.log.Warn().Err(err).Str("env", env).Msg("remove the worktree of a destroyed env")
		}
	}
	if cm := r.certs.Load(); cm != nil {
		if err := cm.Forget(ctx, env); err != nil {
			r.log.Warn().Err(err).Str("env", env).Msg("remove the certificate of a destroyed env")
		}
		if r.others != nil {
			r.others(env)
		}
	}
}
