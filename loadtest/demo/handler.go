package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// server is the demo server's state, shared by Handler and Run.
type server struct {
	name   string // fixed env name; "" derives it from each request's Host
	visits *visitCounter
	mux    *http.ServeMux
	out    io.Writer // opts.Log behind a mutex
	log    zerolog.Logger

	// streamsCtx is cancelled when Run shuts down, to end event streams and
	// WebSockets, which would otherwise hold shutdown for its whole grace.
	streamsCtx    context.Context
	cancelStreams context.CancelFunc
	streams       sync.WaitGroup // WebSocket handlers, which Shutdown cannot see

	mu             sync.Mutex
	streamsStopped bool // guarded by mu; no new streams once set
}

func newServer(opts Options) (*server, error) {
	out := io.Discard
	if opts.Log != nil {
		out = opts.Log
	}
	visits, err := openVisits(opts.DataDir)
	if err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = os.Getenv(EnvNameVar)
	}
	sw := &syncWriter{w: out}
	s := &server{
		name:   name,
		visits: visits,
		mux:    http.NewServeMux(),
		out:    sw,
		log:    newLogger(sw),
	}
	s.streamsCtx, s.cancelStreams = context.WithCancel(context.Background())

	s.mux.HandleFunc("GET /{$}", s.servePage)
	s.mux.HandleFunc("GET /healthz", serveHealthz)
	s.mux.HandleFunc("GET /set-cookie", serveSetCookie)
	s.mux.HandleFunc("GET /ws", s.serveWebSocket)
	s.mux.HandleFunc("GET /events", s.serveEvents)
	s.mux.HandleFunc("GET /slow", serveSlow)
	s.mux.HandleFunc("/echo", s.serveEcho)
	s.mux.HandleFunc("GET /download", serveDownload)
	s.mux.HandleFunc("POST /upload", serveUpload)
	s.mux.HandleFunc("PUT /upload", serveUpload)
	return s, nil
}

// ServeHTTP tags every response with the env name, so a client can tell
// which environment answered whatever it asked for.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Envgate-Env", s.envName(r))
	s.mux.ServeHTTP(w, r)
}

// envName is the configured name, else the first label of the Host.
func (s *server) envName(r *http.Request) string {
	if s.name != "" {
		return s.name
	}
	return hostLabel(r.Host)
}

// displayName is the name for the listening line: "-" when it varies per
// request.
func (s *server) displayName() string {
	if s.name != "" {
		return s.name
	}
	return "-"
}

// hostLabel returns the first DNS label of host (port stripped, lowercased),
// or "unknown" for an empty host or an IP address, which name no env.
func hostLabel(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" || net.ParseIP(host) != nil {
		return "unknown"
	}
	label, _, _ := strings.Cut(host, ".")
	if label == "" {
		return "unknown"
	}
	return strings.ToLower(label)
}

// pageTemplate is parsed at the first page, not at start: the demo server
// boots at every env start, and most envs of a benchmark never show it.
var pageTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("page").Parse(pageHTML))
})

const pageHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Env}} · envgate demo</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:2.5rem;margin:0}
.sub{color:#59636e;margin:0 0 2rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.5rem}
dt{color:#59636e}dd{margin:0}
code{font:14px ui-monospace,monospace}
</style>
</head>
<body>
<h1>{{.Env}}</h1>
<p class="sub">envgate demo dev server</p>
<dl>
<dt>Host</dt><dd><code>{{.Host}}</code></dd>
<dt>Visits</dt><dd id="visits">{{.Visits}}</dd>
<dt>PID</dt><dd>{{.PID}}</dd>
</dl>
<p>Also here: <a href="/events?count=5">/events</a> · <a href="/echo">/echo</a> · <a href="/healthz">/healthz</a> · <code>/ws</code></p>
</body>
</html>
`

// Page is what GET / shows: as HTML, or as JSON when the client asks for
// application/json and not text/html.
type Page struct {
	Env    string `json:"env"`
	Host   string `json:"host"`
	Visits uint64 `json:"visits"`
	PID    int    `json:"pid"`
}

func (s *server) servePage(w http.ResponseWriter, r *http.Request) {
	n, err := s.visits.next()
	if err != nil {
		s.log.Error().Err(err).Msg("count visit")
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	d := Page{Env: s.envName(r), Host: r.Host, Visits: n, PID: os.Getpid()}
	h := w.Header()
	h.Set("X-Demo-Visits", strconv.FormatUint(n, 10))
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept")
	if wantsJSON(r.Header.Values("Accept")) {
		writeJSON(w, http.StatusOK, d)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTemplate().Execute(w, d); err != nil {
		s.log.Debug().Err(err).Msg("write page")
	}
}

// wantsJSON reports whether the Accept header values name application/json
// and not text/html. A browser's Accept lists text/html, so browsers always
// get the page.
func wantsJSON(accept []string) bool {
	jsonOK, htmlOK := false, false
	for _, v := range accept {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			switch mt {
			case "application/json":
				jsonOK = true
			case "text/html":
				htmlOK = true
			}
		}
	}
	return jsonOK && !htmlOK
}

func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

// serveSetCookie answers with a Set-Cookie field for each value of the
// query parameter c, as written ("s=1; Domain=.localhost"), so that
// tests can see what reaches the browser.
func serveSetCookie(w http.ResponseWriter, r *http.Request) {
	for _, c := range r.URL.Query()["c"] {
		w.Header().Add("Set-Cookie", c)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

// EchoResponse is what /echo answers: the request as the server saw it,
// after every proxy on the way.
type EchoResponse struct {
	Env           string              `json:"env"`
	Method        string              `json:"method"`
	Path          string              `json:"path"`
	Query         string              `json:"query"`
	Host          string              `json:"host"`
	Proto         string              `json:"proto"`
	RemoteAddr    string              `json:"remote_addr"`
	Headers       map[string][]string `json:"headers"`
	ContentLength int64               `json:"content_length"`
	BodyBytes     int64               `json:"body_bytes"`
}

func (s *server) serveEcho(w http.ResponseWriter, r *http.Request) {
	// Counted, not kept, so a large upload streams through in constant
	// memory.
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, fmt.Sprintf("demo: read body after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, EchoResponse{
		Env:           s.envName(r),
		Method:        r.Method,
		Path:          r.URL.Path,
		Query:         r.URL.RawQuery,
		Host:          r.Host,
		Proto:         r.Proto,
		RemoteAddr:    r.RemoteAddr,
		Headers:       r.Header,
		ContentLength: r.ContentLength,
		BodyBytes:     n,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "demo: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
