package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var pid = os.Getpid()

// ListenUnix listens on a Unix socket at path, owned by root (the
// process's uid) and group, mode 0660: only root and the group's members
// may connect. A socket file already there (an earlier or the previous
// process's, during a restart in place) is replaced. group "" keeps the
// process's group. The returned close function removes the socket file
// unless another process has replaced it since.
func ListenUnix(path, group string) (net.Listener, func(), error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, nil, fmt.Errorf("admin: socket group: %w", err)
		}
		gid = g
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("admin: socket dir: %w", err)
	}
	// Bind under a temporary name, set owner and mode, then rename over
	// path: no moment where the socket exists with the umask's mode, and
	// a predecessor's socket keeps working until the rename.
	tmp := path + ".new"
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, func(), error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, fmt.Errorf("admin: socket %s: %w", path, err)
	}
	if err := os.Chown(tmp, os.Geteuid(), gid); err != nil {
		return fail(err)
	}
	if err := os.Chmod(tmp, 0o660); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fail(err)
	}
	ours := fi.Sys().(*syscall.Stat_t).Ino
	cleanup := func() {
		ln.Close()
		if fi, err := os.Stat(path); err == nil && fi.Sys().(*syscall.Stat_t).Ino == ours {
			os.Remove(path)
		}
	}
	return ln, cleanup, nil
}

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// ReadToken reads a bearer token from path: the file's content without
// surrounding white space. The file must not be readable by others.
func ReadToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("admin: token file: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("admin: token file %s is readable by every user (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin: token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("admin: token file %s: the token is shorter than 16 characters; make one with: openssl rand -hex 32 > %s", path, path)
	}
	return tok, nil
}

// RequireToken wraps h so that a request without the token is answered
// 401. The token comes as "Authorization: Bearer <token>" (the CLI, curl,
// Prometheus) or in the cookie POST /login sets (a browser, for the
// dashboard: HttpOnly, SameSite=Strict). The comparison takes the same
// time whatever the token sent. /healthz stays open (probes).
func RequireToken(token string, h http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
		case r.URL.Path == "/login":
			login(w, r, want)
			return
		case !tokenOK(r, want):
			if r.Method == http.MethodGet && r.URL.Path == "/" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="envgate admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <the content of admin.token_file>)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tokenCookie holds the token in a browser that logged in.
const tokenCookie = "envgate_admin_token"

func tokenOK(r *http.Request, want []byte) bool {
	var got string
	if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
		got = a[len("Bearer "):]
	} else if c, err := r.Cookie(tokenCookie); err == nil {
		got = c.Value
	}
	return subtle.ConstantTimeCompare([]byte(got), want) == 1
}

const loginPage = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>envgate: log in</title><style>body{font:15px system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}input,button{font:inherit;padding:.4rem;width:100%;margin:.3rem 0}</style></head>
<body><h1>envgate</h1><p>MESSAGE</p><form method="post" action="/login"><label>Admin token (admin.token_file)<input name="token" type="password" autocomplete="current-password" autofocus></label><button>Log in</button></form></body></html>`

// login shows the token form (GET) or checks the token and sets the
// cookie (POST).
func login(w http.ResponseWriter, r *http.Request, want []byte) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodPost {
		io.WriteString(w, strings.Replace(loginPage, "MESSAGE", "The dashboard needs the gateway's admin token.", 1))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	tok := r.PostFormValue("token")
	if subtle.ConstantTimeCompare([]byte(tok), want) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, strings.Replace(loginPage, "MESSAGE", "Wrong token.", 1))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: tok, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// NewServer returns an http.Server for the admin API. Like the gateway's,
// it has no write timeout: log follows stream for as long as they like.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// Serve serves srv on lns until ctx ends, then shuts down within grace
// (log follows are cut off then).
func Serve(ctx context.Context, srv *http.Server, lns []net.Listener, grace time.Duration) error {
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- srv.Serve(ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
