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
	names, err := m.envNames("forget", env)
	if err != nil {
		return err
	}
	m.evictNames(names)
	if m.acme != nil && m.cfg.Wildcard == nil {
		return m.acme.deleteStored(ctx, names)
	}
	return nil
}

// Evict drops the certificates of env's hostnames from this gateway's
// memory only, as Forget does, but leaves the storage alone: in cluster
// mode the other nodes do so when the node that ran env destroyed it and
// removed the stored certificate (the storage is shared; a certificate
// stored since, for a new start of the env, must stay). The next
// handshake for the name loads it from storage, or asks the decision and
// issues afresh.
func (m *Manager) Evict(env string) error {
	names, err := m.envNames("evict", env)
	if err != nil {
		return err
	}
	m.evictNames(names)
	return nil
}

// evictNames drops names' certificates from memory: certmagic's cache in
// acme mode (which stops their renewal here), the leaf cache in internal
// mode. Files mode and wildcard certificates cover every env: nothing.
func (m *Manager) evictNames(names []string) {
	switch {
	case m.acme != nil && m.cfg.Wildcard == nil:
		m.acme.evict(names)
	case m.internal != nil:
		m.internal.forget(names)
	}
}

// envNames is env's hostname under every configured domain.
func (m *Manager) envNames(op, env string) ([]string, error) {
	lower, ok := lowerEnv(env)
	if !ok {
		return nil, fmt.Errorf("certs: %s: %q is not an env label", op, env)
	}
	names := make([]string, 0, len(m.cfg.Domains))
	for _, d := range m.cfg.Domains {
		names = append(names, lower+"."+d)
	}
	return names, nil
}

// evict drops names' certificates from the cache, which stops their
// renewal here.
func (a *acmeManager) evict(names []string) {
	subjects := make([]certmagic.SubjectIssuer, 0, len(names))
	for _, n := range names {
		subjects = append(subjects, certmagic.SubjectIssuer{Subject: n})
	}
	a.cache.RemoveManaged(subjects)
}

// deleteStored deletes names' storage (certificate, key and metadata).
func (a *acmeManager) deleteStored(ctx context.Context, names []string) error {
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
