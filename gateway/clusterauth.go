package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HopAuthHeader authenticates a HopHeader: the forwarding node's HMAC,
// under the cluster's shared secret, over the hop's node, time and
// flags (the access decision, or a TCP hop) and the request's method,
// host and target. Only a
// request that carries a valid one is a hop; a client's Envgate-Hop or
// Envgate-Hop-Auth is removed as the request comes in, so no client can
// pass for a node.
const HopAuthHeader = "Envgate-Hop-Auth"

// hopMaxSkew is how far a hop's time may lie from this node's clock.
const hopMaxSkew = 60 * time.Second

// MinClusterSecret is the shortest cluster secret accepted, in bytes.
const MinClusterSecret = 16

// hop is what an authenticated hop says: the node that forwarded the
// request, having admitted its client, and whether that client may see
// dev server output; or, for tcp, that it opens a TCP hop (a connection
// of a tcp: listener relayed to the env's owner, see clustertcp.go).
type hop struct {
	node       string
	showOutput bool
	tcp        bool
}

// The flags of a hop's signature: an HTTP request whose client may see
// dev server output, one whose client may not, and a TCP hop. A TCP hop
// is a flag of its own, under the signature, so that no HTTP request a
// node forwards (an Upgrade from a client, say) can pass for one.
const (
	hopFlagOutput   = "o"
	hopFlagNoOutput = "-"
	hopFlagTCP      = "t"
)

// hopKey holds the *hop of an authenticated hop.
type hopKey struct{}

var errBadHop = errors.New("gateway: hop header without a valid signature")

// hopMAC is the signature of a hop (see HopAuthHeader). Each field is
// bounded by a newline, which none can hold (a request target, host or
// method with one never parses).
func hopMAC(secret []byte, node, at, flags, method, host, target string) string {
	m := hmac.New(sha256.New, secret)
	for _, s := range []string{"envgate-hop/1", node, at, flags, method, host, target} {
		m.Write([]byte(s))
		m.Write([]byte{'\n'})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// SignHop sets the hop headers of out, a request this node forwards at
// now for a client whose output visibility is showOutput. The signature
// covers the target out is sent with (its URL's RequestURI), which is
// what the next node reads as its RequestURI.
func SignHop(secret []byte, node string, now time.Time, showOutput bool, out *http.Request) {
	flags := hopFlagNoOutput
	if showOutput {
		flags = hopFlagOutput
	}
	signHop(secret, node, now, flags, out)
}

// signHop sets the hop headers of out with flags.
func signHop(secret []byte, node string, now time.Time, flags string, out *http.Request) {
	at := strconv.FormatInt(now.Unix(), 10)
	out.Header.Set(HopHeader, node)
	out.Header.Set(HopAuthHeader, at+"."+flags+"."+hopMAC(secret, node, at, flags, out.Method, out.Host, out.URL.RequestURI()))
}

// verifyHop checks r's hop headers against secret at now.
func verifyHop(secret []byte, now time.Time, r *http.Request) (*hop, error) {
	node := r.Header.Get(HopHeader)
	auth := r.Header.Get(HopAuthHeader)
	at, rest, ok1 := strings.Cut(auth, ".")
	flags, mac, ok2 := strings.Cut(rest, ".")
	if node == "" || !ok1 || !ok2 || (flags != hopFlagOutput && flags != hopFlagNoOutput && flags != hopFlagTCP) || len(r.Header.Values(HopHeader)) != 1 || len(r.Header.Values(HopAuthHeader)) != 1 {
		return nil, errBadHop
	}
	sec, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return nil, errBadHop
	}
	if d := now.Sub(time.Unix(sec, 0)); d > hopMaxSkew || d < -hopMaxSkew {
		return nil, errors.New("gateway: hop signed " + d.Round(time.Second).String() + " away from this node's clock")
	}
	want := hopMAC(secret, node, at, flags, r.Method, r.Host, r.RequestURI)
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return nil, errBadHop
	}
	return &hop{node: node, showOutput: flags == hopFlagOutput, tcp: flags == hopFlagTCP}, nil
}

// authenticateHop returns r marked as a hop (see hopOf) if its hop
// headers are a node's; otherwise it removes them: a client's go no
// further.
func (c *clusterRoute) authenticateHop(r *http.Request) *http.Request {
	if _, ok := r.Header[HopHeader]; !ok {
		if _, ok := r.Header[HopAuthHeader]; !ok {
			return r
		}
	}
	hp, err := verifyHop(c.secret, time.Now(), r)
	r.Header.Del(HopHeader)
	r.Header.Del(HopAuthHeader)
	if err != nil {
		c.log.Warn().Err(err).Str("remote", r.RemoteAddr).Str("host", r.Host).Msg("hop headers removed: not signed by a node of the cluster")
		return r
	}
	return r.WithContext(contextWithHop(r.Context(), hp))
}

// HopsTo returns a handler that sends the requests signed as hops by a
// node of the cluster (under secret) to hops, and all others to next.
// Nodes reach each other on their plain HTTP listener (the advertise
// address), which with TLS on answers clients with a redirect to https
// (certs.Manager.HTTPHandler): a hop must reach the gateway instead. A
// client's made-up hop headers do not verify, so its request is
// redirected as any other; but one that asks for a TCP hop goes to
// hops, which refuses it.
func HopsTo(hops http.Handler, secret []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isTCPHopUpgrade(r.Header) {
			hops.ServeHTTP(w, r)
			return
		}
		if _, ok := r.Header[HopHeader]; ok {
			if _, err := verifyHop(secret, time.Now(), r); err == nil {
				hops.ServeHTTP(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
