package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// errClass is the kind of failure a request ended in.
type errClass int

const (
	classOK errClass = iota
	classConnect
	classTLS
	classTimeout
	classStatus
	classMisroute
	classBacklog
	classOther
	numClasses
)

// classNames are the keys of Report.Errors, part of the JSON contract.
var classNames = [numClasses]string{"ok", "connect", "tls", "timeout", "status", "misroute", "backlog", "other"}

// dialError marks a failure to open a connection to Options.Addr, so it can
// be told apart from a failure after the server accepted the connection.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// newTransport builds the one transport a run uses. Its dialer ignores the
// address the URL names and always dials addr, so URLs carry env hostnames
// (Host header, and SNI, which the transport takes from the URL host) and no
// name is ever resolved.
func newTransport(o *Options, conns int) (*http.Transport, error) {
	dialer := &net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}
	addr := o.Addr
	tr := &http.Transport{
		Proxy: nil, // a proxy from the environment would defeat --addr
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return c, nil
		},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: o.Timeout,
		DisableCompression:  true, // measure the server, not gzip
	}
	if o.Scheme == "https" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.Insecure} //nolint:gosec // --insecure is the user's explicit choice
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("loadtest: --ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("loadtest: --ca %s: no PEM certificates in it", o.CAFile)
			}
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
	}
	var p http.Protocols
	switch {
	case !o.HTTP2:
		p.SetHTTP1(true)
	case o.Scheme == "https":
		p.SetHTTP2(true)
	default:
		p.SetUnencryptedHTTP2(true)
	}
	tr.Protocols = &p
	return tr, nil
}

// classify maps a transport error to its class. A dial that timed out is a
// connect failure: the server never got the request.
func classify(err error) errClass {
	var de *dialError
	if errors.As(err, &de) {
		return classConnect
	}
	var (
		recErr   tls.RecordHeaderError
		verErr   *tls.CertificateVerificationError
		alertErr tls.AlertError
		hostErr  x509.HostnameError
		authErr  x509.UnknownAuthorityError
	)
	if errors.As(err, &recErr) || errors.As(err, &verErr) || errors.As(err, &alertErr) ||
		errors.As(err, &hostErr) || errors.As(err, &authErr) {
		return classTLS
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return classTimeout
	}
	return classOther
}
