package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
)

const (
	rootCertFile = "root.pem"
	rootKeyFile  = "root.key"

	// The root lives two years: it sits in trust stores, and a copy of
	// state_dir/ca must not be worth much for long. It is replaced once
	// less than rootRenewBefore is left.
	rootLifetime    = 2 * 365 * 24 * time.Hour
	rootRenewBefore = 30 * 24 * time.Hour
	// Leaves live a week and are replaced two days before they expire: short
	// enough that a copied key is worth little, long enough that a laptop
	// asleep over a weekend still serves a valid one when it wakes.
	leafLifetime    = 7 * 24 * time.Hour
	leafRenewBefore = 2 * 24 * time.Hour
	// maxLeaves bounds the in-memory cache, since an "any" env source allows
	// every valid label and a client may send endless new names.
	maxLeaves = 4096
)

// internalCA is a local certificate authority: a root made once and kept
// in StateDir/ca, and leaf certificates made on demand and kept in memory.
type internalCA struct {
	log          zerolog.Logger
	decide       func(context.Context, string) error
	rootCertPath string
	root         *x509.Certificate
	rootKey      crypto.Signer
	issuing      singleflight.Group
	event        func(CertEvent) // Config.event

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // guarded by mu; keyed by lower-case server name
}

func newInternalCA(cfg *Config, decide func(context.Context, string) error, log zerolog.Logger) (*internalCA, error) {
	dir := filepath.Join(cfg.StateDir, "ca")
	root, key, err := loadOrCreateRootLocked(dir, cfg.Domains, log)
	if err != nil {
		return nil, err
	}
	return &internalCA{
		log:          log,
		decide:       decide,
		rootCertPath: filepath.Join(dir, rootCertFile),
		root:         root,
		rootKey:      key,
		event:        cfg.event,
		leaves:       make(map[string]*tls.Certificate),
	}, nil
}

// loadOrCreateRootLocked is loadOrCreateRoot under an exclusive lock on
// dir/root.lock: gateways that share the state dir (a cluster's nodes,
// on a shared filesystem) starting at once make one root, not each its
// own with one's key beside another's certificate.
func loadOrCreateRootLocked(dir string, domains []string, log zerolog.Logger) (*x509.Certificate, crypto.Signer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "root.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	defer f.Close() // unlocks
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: lock %s: %w", f.Name(), err)
	}
	return loadOrCreateRoot(dir, domains, log)
}

// loadOrCreateRoot reads the root from dir, or makes one, name-constrained
// to domains, when neither file exists. Only one file present means damage;
// replacing the root silently would break every browser that trusts the
// old one, so it is an error. A root that could sign for names outside
// domains, or lives longer than rootLifetime, or expires soon, is replaced
// (its key overwritten) with a warning on how to trust the new one.
func loadOrCreateRoot(dir string, domains []string, log zerolog.Logger) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, rootCertFile), filepath.Join(dir, rootKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	replacing := ""
	switch {
	case certErr == nil && keyErr == nil:
		if err := os.Chmod(keyPath, 0o600); err != nil {
			return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
		}
		root, key, err := parseRoot(certPEM, keyPEM)
		if err != nil {
			return nil, nil, err
		}
		if replacing = rootUnfit(root, domains, time.Now()); replacing == "" {
			return root, key, nil
		}
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("certs: internal CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("certs: internal CA: %w", keyErr)
	default:
		return nil, nil, fmt.Errorf("certs: internal CA: only one of %s and %s exists; restore the other, or remove both to make a new root (browsers that trusted the old one must then trust the new one)", certPath, keyPath)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "envgate local CA (" + host + ")", Organization: []string{"envgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
		// A DNS constraint covers the name and every name below it
		// (RFC 5280 4.2.1.10): dev.example.com permits x.dev.example.com.
		// Critical, so that a verifier that does not understand it
		// rejects the chain instead of ignoring the limit.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         slices.Clone(domains),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	// Key first: a crash between the two writes leaves a key without a
	// certificate, which the next start reports instead of overwriting.
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	if replacing != "" {
		log.Warn().Str("root", certPath).Str("reason", replacing).Strs("domains", domains).
			Msg("replaced the local certificate authority's root; machines and browsers that trusted the old one must trust the new one: run `envgate trust --install` (it replaces the system store's copy) and, in browsers with their own store, remove \"envgate local CA\" and add the new root as `envgate trust` prints")
		return root, key, nil
	}
	log.Info().Str("root", certPath).Strs("domains", domains).Msg("created local certificate authority; run `envgate trust` to trust it")
	return root, key, nil
}

// rootUnfit says why root must be replaced, or "" if it may stay: it must
// be limited, by a critical name constraint, to exactly domains and
// nothing else, live no longer than rootLifetime, and not expire within
// rootRenewBefore.
func rootUnfit(root *x509.Certificate, domains []string, now time.Time) string {
	permitted := slices.Sorted(slices.Values(root.PermittedDNSDomains))
	want := slices.Sorted(slices.Values(domains))
	switch {
	case len(root.PermittedDNSDomains) == 0:
		return "it has no name constraints, so it can sign for any site"
	case !root.PermittedDNSDomainsCritical:
		return "its name constraints are not critical"
	case !slices.Equal(permitted, want):
		return fmt.Sprintf("its name constraints %v are not the configured domains %v", permitted, want)
	case len(root.ExcludedDNSDomains) > 0 || len(root.PermittedIPRanges) > 0 || len(root.ExcludedIPRanges) > 0 ||
		len(root.PermittedEmailAddresses) > 0 || len(root.ExcludedEmailAddresses) > 0 ||
		len(root.PermittedURIDomains) > 0 || len(root.ExcludedURIDomains) > 0:
		return "it carries name constraints other than the configured domains"
	case root.NotAfter.Sub(root.NotBefore) > rootLifetime+2*time.Hour:
		return fmt.Sprintf("it lives %v, longer than %v", root.NotAfter.Sub(root.NotBefore).Round(time.Hour), rootLifetime)
	case root.NotAfter.Sub(now) < rootRenewBefore:
		return "it expires on " + root.NotAfter.UTC().Format(time.DateOnly)
	}
	return ""
}

func parseRoot(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: internal CA: root certificate and key: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || pair.Leaf == nil || !pair.Leaf.IsCA {
		return nil, nil, errors.New("certs: internal CA: root.pem is not a CA certificate with a signing key")
	}
	return pair.Leaf, signer, nil
}

func (ca *internalCA) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name == "" {
		return nil, errors.New("certs: no server name (SNI) in the handshake")
	}
	now := time.Now()
	ca.mu.Lock()
	cert := ca.leaves[name]
	ca.mu.Unlock()
	if cert != nil && now.Before(cert.Leaf.NotAfter.Add(-leafRenewBefore)) {
		return cert, nil
	}
	if err := ca.decide(hello.Context(), name); err != nil {
		return nil, err
	}
	v, err, _ := ca.issuing.Do(name, func() (any, error) {
		c, err := ca.issue(name, now)
		switch {
		case err != nil:
			ca.event(CertFailed)
		case cert != nil:
			ca.event(CertRenewed)
		default:
			ca.event(CertObtained)
		}
		return c, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

func (ca *internalCA) issue(name string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   randomSerial(),
		Subject:        pkix.Name{CommonName: name},
		DNSNames:       []string{name},
		NotBefore:      now.Add(-time.Hour), // tolerate clients whose clock is behind
		NotAfter:       now.Add(leafLifetime),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		AuthorityKeyId: ca.root.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.rootKey)
	if err != nil {
		return nil, fmt.Errorf("certs: internal CA: sign %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: internal CA: %w", err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}

	ca.mu.Lock()
	if len(ca.leaves) >= maxLeaves {
		ca.evictLocked(now)
	}
	ca.leaves[name] = cert
	ca.mu.Unlock()
	ca.log.Debug().Str("server_name", name).Time("not_after", leaf.NotAfter).Msg("issued local certificate")
	return cert, nil
}

// evictLocked makes room in the leaf cache: stale leaves go first, then
// arbitrary ones (map order), down to three quarters of the cap; a dropped
// leaf is simply issued again on its next handshake. ca.mu must be held.
func (ca *internalCA) evictLocked(now time.Time) {
	for name, c := range ca.leaves {
		if !now.Before(c.Leaf.NotAfter.Add(-leafRenewBefore)) {
			delete(ca.leaves, name)
		}
	}
	for name := range ca.leaves {
		if len(ca.leaves) <= maxLeaves*3/4 {
			break
		}
		delete(ca.leaves, name)
	}
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("certs: crypto/rand failed: " + err.Error()) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha1.Sum(der) // RFC 5280 method 1; an identifier, not a security boundary
	return sum[:]
}

// writeFileAtomic writes data to a temporary file in path's directory with
// perm and renames it over path, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	success := false
	defer func() {
		if !success {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	success = true
	return nil
}
