package access

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/envgate/envgate/lifecycle/cluster/sharedfile"
)

// SharePath, followed by a token, is a share link's path: the gateway
// answers it on the env's host by setting ShareCookieName for that host
// only and redirecting to "/".
const SharePath = "/_envgate/share/"

// ShareCookieName is the cookie a share link sets.
const ShareCookieName = "envgate_share"

// ShareKeyFile is the share key's file name in the state dir.
const ShareKeyFile = "share.key"

// ShareKey signs and checks share links: a token names its env and its
// expiry, and is valid for that env's host only until then. Anyone with
// the key (state_dir/share.key, mode 0600) can make links.
type ShareKey struct {
	key []byte
	now func() time.Time
}

// LoadShareKey reads the key at path, making a new random one there
// (mode 0600) if there is none. Processes that start together on a
// state_dir without a key (the nodes of a cluster, which share it) all
// load the one made first: a new key is written whole to a file of its
// own and then linked to path, which fails if path exists, so no
// process reads a key still being written, or replaces another's.
func LoadShareKey(path string) (*ShareKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = makeShareKey(path)
		if errors.Is(err, fs.ErrExist) {
			b, err = os.ReadFile(path) // made meanwhile by another process
		}
	}
	if err != nil {
		return nil, fmt.Errorf("access: share key: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("access: share key %s: too short (%d bytes); delete it to make a new one", path, len(b))
	}
	return &ShareKey{key: b, now: time.Now}, nil
}

// makeShareKey makes a new key at path unless a file is there already
// (an error wrapping fs.ErrExist), and returns it.
func makeShareKey(path string) ([]byte, error) {
	b := make([]byte, 32)
	rand.Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := sharedfile.Create(path, b); err != nil {
		return nil, err
	}
	return b, nil
}

// Token is a share token for env, valid until until.
func (k *ShareKey) Token(env string, until time.Time) string {
	exp := strconv.FormatInt(until.Unix(), 10)
	return exp + "." + base64.RawURLEncoding.EncodeToString(k.sign(env, exp))
}

func (k *ShareKey) sign(env, exp string) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte("envgate-share\x00" + env + "\x00" + exp))
	return m.Sum(nil)
}

// Verify returns token's expiry if it is a valid, unexpired token for env.
func (k *ShareKey) Verify(env, token string) (time.Time, bool) {
	exp, sig, ok := strings.Cut(token, ".")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, k.sign(env, exp)) {
		return time.Time{}, false
	}
	until := time.Unix(n, 0)
	if !k.now().Before(until) {
		return time.Time{}, false
	}
	return until, true
}

// check reports whether r carries a valid share cookie for env.
func (k *ShareKey) check(r *http.Request, env string) bool {
	c, err := r.Cookie(ShareCookieName)
	if err != nil {
		return false
	}
	_, ok := k.Verify(env, c.Value)
	return ok
}

// RedeemShare checks a share link's token for env and returns the cookie
// that admits its holder to env's host (host-only: no Domain), or nil if
// the token is not valid. secure marks it Secure (an HTTPS request).
func (p *Policy) RedeemShare(env, token string, secure bool) *http.Cookie {
	if p.shares == nil {
		return nil
	}
	until, ok := p.shares.Verify(env, token)
	if !ok {
		return nil
	}
	return &http.Cookie{Name: ShareCookieName, Value: token, Path: "/", Expires: until,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}
}
