package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// clientHello captures the first flight crypto/tls sends for cfg.
func clientHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, cfg)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Handshake() // fails when b closes; only its first flight matters
	}()
	b.SetDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	raw, _, err := readClientHello(io.TeeReader(b, &buf))
	if err != nil {
		tb.Fatalf("read ClientHello: %v", err)
	}
	return raw
}

func TestReadClientHello(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"db--feature-x.dev.example.com", &tls.Config{ServerName: "db--feature-x.dev.example.com"}},
		{"x.localhost", &tls.Config{ServerName: "x.localhost", NextProtos: []string{"h2"}, MaxVersion: tls.VersionTLS12}},
		{"", &tls.Config{InsecureSkipVerify: true}},
	} {
		raw := clientHello(t, tc.cfg)
		got, name, err := readClientHello(bytes.NewReader(append(raw, "trailing"...)))
		if err != nil || name != tc.name || !bytes.Equal(got, raw) {
			t.Errorf("%q: got name %q, %d of %d bytes, %v", tc.name, name, len(got), len(raw), err)
		}
	}
	// A ClientHello split over several records, as RFC 8446 allows.
	raw := clientHello(t, &tls.Config{ServerName: "split.localhost"})
	body := raw[recordHeaderLen:]
	var split []byte
	for len(body) > 0 {
		n := min(len(body), 7)
		split = append(split, recordTypeHandshake, 3, 1, 0, byte(n))
		split = append(split, body[:n]...)
		body = body[n:]
	}
	if _, name, err := readClientHello(bytes.NewReader(split)); err != nil || name != "split.localhost" {
		t.Errorf("split records: %q, %v", name, err)
	}
	for _, bad := range []string{"GET / HTTP/1.1\r\n\r\n", "\x16\x03\x01\x00\x00", "\x16\x03\x01\xff\xff", "\x16\x03\x01\x00\x04\x02\x00\x00\x00"} {
		if _, _, err := readClientHello(bytes.NewReader([]byte(bad))); !errors.Is(err, errNotTLS) {
			t.Errorf("%q: err = %v, want errNotTLS", bad, err)
		}
	}
}

// FuzzReadClientHello: any input ends in a name or an error, never a
// panic; on success the bytes returned for replay are exactly those read.
func FuzzReadClientHello(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "db--feature-x.dev.example.com"}))
	f.Add(clientHello(f, &tls.Config{ServerName: "x.localhost", MaxVersion: tls.VersionTLS12}))
	f.Add([]byte("\x16\x03\x01\x00\x04\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, name, err := readClientHello(bytes.NewReader(b))
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, raw) {
			t.Fatal("returned bytes are not the ones read")
		}
		if len(name) > len(raw) {
			t.Fatalf("server name %q longer than the input", name)
		}
	})
}
