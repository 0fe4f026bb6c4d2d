package certs

import (
	"context"
	"errors"
	"fmt"

	"github.com/caddyserver/certmagic"
)

// Forget removes the certificates of env's hostnames, under every
// configured domain, so that a destroyed env leaves no key behind: in
// acme mode from certmagic's cache (which stops their renewal) and its
// storage in StateDir/certs, in internal mode from the leaf cache. A
// later handshake for the name asks the decision again, as for a name
// never seen. Files mode and wildcard certificates cover every env at
// once: nothing is removed. A certificate that is not there is success.
func (m *Manager) Forget(ctx context.Context, env string) error {
	lower, ok := lowerEnv(env)
	if !ok {
		return fmt.Errorf("certs: forget: %q is not an env label", env)
	}
	env = lower
	names := make([]string, 0, len(m.cfg.Domains))
	for _, d := range m.cfg.Domains {
		names = append(names, env+"."+d)
	}
	switch {
	case m.acme != nil && m.cfg.Wildcard == nil:
		return m.acme.forget(ctx, names)
	case m.internal != nil:
		m.internal.forget(names)
	}
	return nil
}

// forget drops names' certificates from the cache, then deletes their
// storage (certificate, key and metadata), for every issuer.
func (a *acmeManager) forget(ctx context.Context, names []string) error {
	subjects := make([]certmagic.SubjectIssuer, 0, len(names))
	for _, n := range names {
		subjects = append(subjects, certmagic.SubjectIssuer{Subject: n})
	}
	a.cache.RemoveManaged(subjects)
	var errs []error
	for _, n := range names {
		key := certmagic.StorageKeys.CertsSitePrefix(a.issuer.IssuerKey(), n)
		if err := a.magic.Storage.Delete(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("certs: forget %s: %w", n, err))
			continue
		}
		a.log.Debug().Str("server_name", n).Msg("certificate removed")
	}
	return errors.Join(errs...)
}

// forget drops names' leaves; the next handshake for one issues afresh.
func (ca *internalCA) forget(names []string) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, n := range names {
		delete(ca.leaves, n)
	}
}
