package admin

import (
	_ "embed"
	"html/template"
	"net/http"
	"time"

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

func (h *Handler) dashboard(w http.ResponseWriter, _ *http.Request) {
	d := dashboardData{Version: h.cfg.Version, Instance: h.cfg.Instance, Pid: pid}
	now := time.Now()
	for _, e := range h.cfg.Envs.Details() {
		if e.State == lifecycle.Ready {
			d.Ready++
		}
		d.Envs = append(d.Envs, EnvOf(e, now))
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page loads nothing from elsewhere and may not be framed.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := dashboardPage.Execute(w, d); err != nil {
		h.cfg.Log.Warn().Err(err).Msg("dashboard")
	}
}
