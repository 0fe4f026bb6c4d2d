package certs

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// filesPollInterval is how often files mode looks at the certificate and
// key. Polling rather than inotify: cert-manager and Kubernetes secrets
// replace files through symlink swaps that inotify watches lose track of,
// and one stat pair a second costs nothing.
const filesPollInterval = time.Second

// fileWatcher serves a certificate and key from files and swaps in a new
// pair when the files change. A pair that does not load (half-written,
// mismatched while one file is replaced before the other) keeps the old
// certificate in service and is tried again on the next change.
type fileWatcher struct {
	certFile, keyFile string
	domains           []string
	log               zerolog.Logger
	cert              atomic.Pointer[tls.Certificate]

	stop chan struct{}
	wg   sync.WaitGroup

	// owned by the polling goroutine after start
	seen      fileStamp // stamp of the files last tried
	lastError string    // last load error logged, so one bad state logs once
}

// fileStamp identifies a version of the two files cheaply.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func newFileWatcher(certFile, keyFile string, domains []string, log zerolog.Logger) (*fileWatcher, error) {
	w := &fileWatcher{certFile: certFile, keyFile: keyFile, domains: domains, log: log, stop: make(chan struct{})}
	stamp, err := w.stamp()
	if err != nil {
		return nil, fmt.Errorf("certs: files: %w", err)
	}
	if err := w.load(); err != nil {
		return nil, fmt.Errorf("certs: files: %w", err)
	}
	w.seen = stamp
	w.wg.Add(1)
	go w.poll()
	return w, nil
}

func (w *fileWatcher) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return w.cert.Load(), nil
}

func (w *fileWatcher) stamp() (fileStamp, error) {
	c, err := os.Stat(w.certFile)
	if err != nil {
		return fileStamp{}, err
	}
	k, err := os.Stat(w.keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// load parses both files and, only if they form a valid pair, serves them.
func (w *fileWatcher) load() error {
	pair, err := tls.LoadX509KeyPair(w.certFile, w.keyFile)
	if err != nil {
		return err
	}
	leaf := pair.Leaf
	if time.Now().After(leaf.NotAfter) {
		w.log.Warn().Time("not_after", leaf.NotAfter).Str("cert_file", w.certFile).Msg("serving an expired certificate")
	}
	for _, d := range w.domains {
		if err := leaf.VerifyHostname("envgate-probe." + d); err != nil {
			w.log.Warn().Str("domain", d).Strs("dns_names", leaf.DNSNames).Msg("certificate does not cover env hostnames under this domain")
		}
	}
	w.cert.Store(&pair)
	w.log.Info().Strs("dns_names", leaf.DNSNames).Time("not_after", leaf.NotAfter).Str("cert_file", w.certFile).Msg("certificate loaded")
	return nil
}

func (w *fileWatcher) poll() {
	defer w.wg.Done()
	t := time.NewTicker(filesPollInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check()
		}
	}
}

func (w *fileWatcher) check() {
	stamp, err := w.stamp()
	if err != nil {
		w.logOnce(err) // a file mid-rename or removed: keep serving
		return
	}
	if stamp == w.seen {
		return
	}
	if err := w.load(); err != nil {
		w.logOnce(err)
		// Leave seen as it was, so the next tick tries again even if the
		// writer finishes within the same mtime granularity.
		return
	}
	w.seen = stamp
	w.lastError = ""
}

func (w *fileWatcher) logOnce(err error) {
	if err.Error() == w.lastError {
		return
	}
	w.lastError = err.Error()
	w.log.Warn().Err(err).Str("cert_file", w.certFile).Str("key_file", w.keyFile).Msg("certificate files not loadable; still serving the previous certificate")
}

func (w *fileWatcher) close() error {
	close(w.stop)
	w.wg.Wait()
	return nil
}
