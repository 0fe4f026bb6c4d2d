package admin

import (
	_ "embed"
	"html/template"
	"net/http"

	"github.com/envgate/envgate/lifecycle"
)

// The dashboard is one server-rendered page: the env table as it is now,
// then a little plain JavaScript that polls GET /v1/envs every two
// seconds, drives stop/restart/destroy, and follows an env's log with a
// streamed GET. No build step, no outside resources.
//
//go:embed dashboard.html
var dashboardHTML string

var dashboardPage = template.Must(template.New("dashboard").Parse(dashboardHTML))

type dashboardData struct {
	Version, Instance string
	Pid               int
	Ready             int
	Envs              []Env
}

func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request) {
	d := dashboardData{Version: h.cfg.Version, Instance: h.cfg.Instance, Pid: pid}
	d.Envs, _ = h.envs(r.Context())
	for _, e := range d.Envs {
		if e.State == lifecycle.Ready.String() {
			d.Ready++
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page loads nothing from elsewhere and may not be framed.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := dashboardPage.Execute(w, d); err != nil {
		h.cfg.Log.Warn().Err(err).Msg("dashboard")
	}
}
