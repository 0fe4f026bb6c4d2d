package gateway

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

// errorPage is what the gateway answers when it cannot proxy: clean HTML
// for browsers, JSON for clients that ask for it.
type errorPage struct {
	Status     int      `json:"status"`
	Error      string   `json:"error"`            // short machine-readable kind
	Env        string   `json:"env,omitempty"`    //
	Message    string   `json:"message"`          // one sentence for people
	Output     []string `json:"output,omitempty"` // tail of the dev server's output
	RetryAfter int      `json:"retry_after,omitempty"`
	RequestID  string   `json:"request_id,omitempty"`
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Status}} {{.Title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:52rem;padding:0 1rem;color:#222}
h1{font-size:1.4rem;margin-bottom:.2rem} .kind{color:#888;font-size:.9rem}
pre{background:#111;color:#ddd;padding:1rem;overflow:auto;font-size:.85rem;border-radius:4px}
</style></head><body>
<h1>{{.Title}}</h1>
<p class="kind">{{.Status}} · {{.Error}}{{if .Env}} · env <b>{{.Env}}</b>{{end}}</p>
<p>{{.Message}}</p>
{{if .Output}}<p>Last lines of the dev server's output:</p>
<pre>{{range .Output}}{{.}}
{{end}}</pre>{{end}}
<p class="kind">envgate{{if .RequestID}} · request {{.RequestID}}{{end}}</p>
</body></html>
`))

// wantsJSON reports whether the client gets JSON rather than HTML: every
// client but a browser, which always names text/html in Accept. curl,
// API clients and load-test tools get something they can parse.
func wantsJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/html") || strings.Contains(v, "application/xhtml+xml") {
			return false
		}
	}
	return true
}

func (p *errorPage) write(w http.ResponseWriter, r *http.Request) {
	if p.RequestID == "" {
		p.RequestID = r.Header.Get(RequestIDHeader)
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if p.RequestID != "" {
		h.Set(RequestIDHeader, p.RequestID)
	}
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	if wantsJSON(r) {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(p.Status)
		json.NewEncoder(w).Encode(p)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(p.Status)
	if r.Method == http.MethodHead {
		return
	}
	pageTmpl.Execute(w, struct {
		*errorPage
		Title string
	}{p, http.StatusText(p.Status)})
}
