package gateway

import (
	"errors"
	"fmt"
	"io"
)

// TLS wire constants (RFC 8446 section 5.1, 4, 4.2; RFC 6066 section 3).
const (
	recordTypeHandshake   = 22
	recordHeaderLen       = 5
	maxRecordLen          = 16384 + 2048
	handshakeClientHello  = 1
	extServerName         = 0
	serverNameTypeHost    = 0
	maxClientHelloBytes   = 64 << 10 // post-quantum key shares are ~1.2 KB; this is plenty
	handshakeHeaderLength = 4
)

// errNotTLS says the first bytes were not a TLS handshake at all.
var errNotTLS = errors.New("gateway: not a TLS ClientHello")

// readClientHello reads the TLS records that carry the ClientHello from r,
// without answering, and returns every byte it read (to replay to the env
// in passthrough mode) and the SNI server name ("" when the client sent
// none). It reads no further than the ClientHello's last record.
func readClientHello(r io.Reader) (raw []byte, serverName string, err error) {
	var msg []byte // the handshake message, reassembled from records
	for {
		var hdr [recordHeaderLen]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return raw, "", fmt.Errorf("gateway: read TLS record: %w", err)
		}
		raw = append(raw, hdr[:]...)
		if hdr[0] != recordTypeHandshake || hdr[1] != 3 {
			return raw, "", errNotTLS
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || n > maxRecordLen || len(raw)+n > maxClientHelloBytes {
			return raw, "", fmt.Errorf("%w: record length %d", errNotTLS, n)
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if _, err := io.ReadFull(r, raw[start:]); err != nil {
			return raw, "", fmt.Errorf("gateway: read TLS record: %w", err)
		}
		msg = append(msg, raw[start:]...)
		if len(msg) < handshakeHeaderLength {
			continue
		}
		if msg[0] != handshakeClientHello {
			return raw, "", fmt.Errorf("%w: handshake type %d", errNotTLS, msg[0])
		}
		want := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if want > maxClientHelloBytes {
			return raw, "", fmt.Errorf("%w: ClientHello of %d bytes", errNotTLS, want)
		}
		if len(msg)-handshakeHeaderLength >= want {
			name, err := parseClientHello(msg[handshakeHeaderLength : handshakeHeaderLength+want])
			return raw, name, err
		}
	}
}

// parseClientHello returns the host_name of the server_name extension of a
// ClientHello body (after the 4-byte handshake header), or "" if it has
// none.
func parseClientHello(b []byte) (string, error) {
	s := byteString(b)
	var sessionID, suites, compression, exts byteString
	if !s.skip(2+32) || // legacy_version, random
		!s.readLen8(&sessionID) || !s.readLen16(&suites) || !s.readLen8(&compression) {
		return "", fmt.Errorf("%w: truncated", errNotTLS)
	}
	if len(s) == 0 {
		return "", nil // no extensions at all
	}
	if !s.readLen16(&exts) || len(s) != 0 {
		return "", fmt.Errorf("%w: bad extensions block", errNotTLS)
	}
	for len(exts) > 0 {
		var typ uint16
		var data byteString
		if !exts.readU16(&typ) || !exts.readLen16(&data) {
			return "", fmt.Errorf("%w: truncated extension", errNotTLS)
		}
		if typ != extServerName {
			continue
		}
		var list byteString
		if !data.readLen16(&list) || len(data) != 0 {
			return "", fmt.Errorf("%w: bad server_name extension", errNotTLS)
		}
		for len(list) > 0 {
			var nameType uint8
			var name byteString
			if !list.readU8(&nameType) || !list.readLen16(&name) {
				return "", fmt.Errorf("%w: bad server_name entry", errNotTLS)
			}
			if nameType == serverNameTypeHost {
				return string(name), nil
			}
		}
		return "", nil
	}
	return "", nil
}

// byteString is a cursor over bytes, in the manner of cryptobyte.String.
type byteString []byte

func (s *byteString) skip(n int) bool {
	if len(*s) < n {
		return false
	}
	*s = (*s)[n:]
	return true
}

func (s *byteString) readU8(v *uint8) bool {
	if len(*s) < 1 {
		return false
	}
	*v = (*s)[0]
	*s = (*s)[1:]
	return true
}

func (s *byteString) readU16(v *uint16) bool {
	if len(*s) < 2 {
		return false
	}
	*v = uint16((*s)[0])<<8 | uint16((*s)[1])
	*s = (*s)[2:]
	return true
}

func (s *byteString) readLen8(out *byteString) bool {
	var n uint8
	return s.readU8(&n) && s.take(int(n), out)
}

func (s *byteString) readLen16(out *byteString) bool {
	var n uint16
	return s.readU16(&n) && s.take(int(n), out)
}

func (s *byteString) take(n int, out *byteString) bool {
	if len(*s) < n {
		return false
	}
	*out = (*s)[:n]
	*s = (*s)[n:]
	return true
}
