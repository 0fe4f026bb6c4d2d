package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/lifecycle"
)

// StatusPath is answered by the gateway itself on every env's hostname,
// never by the env: JSON saying how the env's start is going, which the
// waiting page polls.
const StatusPath = "/_envgate/status"

// waitingTail is how many lines of the dev server's output the waiting
// page shows.
const waitingTail = 20

var (
	// errPageShown: acquire answered with the waiting page.
	errPageShown = errors.New("gateway: waiting page shown")
	// errSlowStart cancels a navigation's first, short wait.
	errSlowStart = errors.New("gateway: start slower than WaitingPageAfter")
)

// acquire is Acquire with the cold-start experience: a browser navigation
// to an env that is not ready within h.pageAfter gets the waiting page
// (and errPageShown), unless the env's template says to block. Everything
// else waits for the start. The page shows the dev server's output only
// if showOutput.
func (h *Handler) acquire(w http.ResponseWriter, r *http.Request, env string, showOutput bool) (Lease, error) {
	if h.progress == nil || !isNavigation(r) {
		return h.envs.Acquire(r.Context(), env)
	}
	began := time.Now()
	// The start runs detached from any request, so cutting this wait
	// short leaves it going for the page to follow.
	ctx, cancel := context.WithTimeoutCause(r.Context(), h.pageAfter, errSlowStart)
	lease, err := h.envs.Acquire(ctx, env)
	cancel()
	if !errors.Is(err, errSlowStart) {
		return lease, err
	}
	p, err := h.progress.Progress(env, outputLines(showOutput))
	if err != nil {
		return nil, err
	}
	if p.State != lifecycle.Ready && h.tmpls.of(p.Template).Waiting != WaitBlock {
		writeWaitingPage(w, r, env, p)
		return nil, errPageShown
	}
	lease, err = h.envs.Acquire(r.Context(), env)
	if err == nil && lease.ColdStart() > 0 {
		lease = waitedLease{lease, time.Since(began)}
	}
	return lease, err
}

// outputLines is how many lines of output the status and waiting pages
// show.
func outputLines(showOutput bool) int {
	if showOutput {
		return waitingTail
	}
	return 0
}

// isNavigation reports whether r is a browser loading a page: a GET that
// accepts HTML, and, when the browser says (Sec-Fetch-Mode), a top-level
// or frame navigation rather than a fetch() or a WebSocket.
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet || isUpgrade(r.Header) || !strings.Contains(r.Header.Get("Accept"), "text/html") {
		return false
	}
	mode := r.Header.Get("Sec-Fetch-Mode")
	return mode == "" || mode == "navigate"
}

// startStatus is StatusPath's answer.
type startStatus struct {
	Env       string   `json:"env"`
	State     string   `json:"state"`      // starting, ready, stopping, stopped, failed
	ElapsedMS int64    `json:"elapsed_ms"` // since the current start began; 0 when not starting
	Output    []string `json:"output"`     // newest lines of the dev server's output
	Error     string   `json:"error,omitempty"`
	Message   string   `json:"message,omitempty"` // why the start failed, for people
	// Updating is the commit (7 hex digits) the env's checkout is being
	// prepared at, after a push; only for clients access control allowed.
	Updating string `json:"updating,omitempty"`
}

func newStartStatus(env string, p lifecycle.Progress) startStatus {
	s := startStatus{Env: env, State: p.State.String(), Output: p.Tail}
	if s.Output == nil {
		s.Output = []string{}
	}
	if p.State == lifecycle.Starting && !p.StartedAt.IsZero() {
		s.ElapsedMS = time.Since(p.StartedAt).Milliseconds()
	}
	if p.State == lifecycle.Starting && p.Updating != "" {
		s.Updating = p.Updating[:min(len(p.Updating), 7)]
	}
	if f := p.Failure; f != nil {
		s.Error = "start_failed"
		if f.Timeout {
			s.Error = "start_timeout"
		}
		s.Message = "Environment " + env + " did not start: " + f.Reason + "."
	}
	return s
}

// serveStatus answers StatusPath. It starts nothing. The state is for
// everyone who may ask about the env's name; the commit being prepared
// only for clients access control allowed (d), and the dev server's
// output only if it also shows them output.
func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request, env string, d access.Decision) {
	admitted := d.Outcome == access.Allowed
	showOutput := admitted && d.ShowOutput
	if h.progress == nil {
		(&errorPage{Status: http.StatusNotFound, Error: "no_status", Env: env,
			Message: "This gateway does not report start progress."}).write(w, r)
		return
	}
	p, err := h.progress.Progress(env, outputLines(showOutput))
	if err != nil {
		h.acquireError(w, r, env, err, false)
		return
	}
	if !admitted {
		p.Updating = ""
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set(RequestIDHeader, r.Header.Get(RequestIDHeader))
	json.NewEncoder(w).Encode(newStartStatus(env, p))
}

// writeWaitingPage answers a navigation with the page that follows the
// start. It is a 503 (with Retry-After) so that nothing caches or
// indexes it as the env's content.
func writeWaitingPage(w http.ResponseWriter, r *http.Request, env string, p lifecycle.Progress) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Retry-After", "1")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set(RequestIDHeader, r.Header.Get(RequestIDHeader))
	w.WriteHeader(http.StatusServiceUnavailable)
	s := newStartStatus(env, p)
	waitingTmpl.Execute(w, struct {
		startStatus
		StatusPath string
		RequestID  string
		Elapsed    string
	}{s, StatusPath, r.Header.Get(RequestIDHeader), strconv.FormatFloat(float64(s.ElapsedMS)/1000, 'f', 1, 64) + "s"})
}

// The page needs nothing but itself: styles and script are inline. It
// polls StatusPath, shows the elapsed time and the dev server's output as
// it comes, reloads once the env is ready, shows the failure if the start
// fails, and reloads to start again if the env stopped meanwhile.
var waitingTmpl = template.Must(template.New("waiting").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Starting {{.Env}}…</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="2"></noscript>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:52rem;padding:0 1rem;color:#222}
h1{font-size:1.4rem;margin-bottom:.2rem} .kind{color:#888;font-size:.9rem}
pre{background:#111;color:#ddd;padding:1rem;overflow:auto;font-size:.85rem;border-radius:4px;min-height:4rem;max-height:24rem}
.spin{display:inline-block;width:.8em;height:.8em;border:2px solid #bbb;border-top-color:#333;border-radius:50%;animation:s 1s linear infinite;margin-right:.4em}
@keyframes s{to{transform:rotate(360deg)}} .failed .spin{display:none}
</style></head><body>
<h1 id="title"><span class="spin"></span>Starting <b>{{.Env}}</b>…</h1>
<p class="kind"><span id="state">{{.State}}</span> · <span id="elapsed">{{.Elapsed}}</span></p>
<p id="updating"{{if not .Updating}} hidden{{end}}>Updating to <code id="commit">{{.Updating}}</code>: running its prepare steps.</p>
<p id="message">The environment's dev server is starting. This page reloads by itself when it is ready.</p>
<pre id="output">{{range .Output}}{{.}}
{{else}}(no output yet)
{{end}}</pre>
<p class="kind">envgate · request {{.RequestID}}</p>
<script>
(function(){
  var started = Date.now() - {{.ElapsedMS}}, done = false, stoppedSince = 0;
  var $ = function(id){ return document.getElementById(id); };
  setInterval(function(){ if (!done) $("elapsed").textContent = ((Date.now() - started) / 1000).toFixed(1) + "s"; }, 100);
  function poll(){
    fetch({{.StatusPath}}, {cache: "no-store", headers: {Accept: "application/json"}})
      .then(function(r){ return r.json(); })
      .then(function(s){
        $("state").textContent = s.state;
        $("updating").hidden = !s.updating;
        if (s.updating) $("commit").textContent = s.updating;
        if (s.output && s.output.length) $("output").textContent = s.output.join("\n");
        if (s.state === "starting" && s.elapsed_ms) started = Date.now() - s.elapsed_ms;
        if (s.state === "ready") { done = true; location.reload(); return; }
        if (s.state === "failed" || s.error) {
          done = true;
          document.body.className = "failed";
          $("title").textContent = "{{.Env}} did not start";
          $("message").textContent = (s.message || "The start failed.") + " Reload the page to try again.";
          return;
        }
        if (s.state === "stopped") {
          stoppedSince = stoppedSince || Date.now();
          if (Date.now() - stoppedSince > 2000) { location.reload(); return; }
        } else {
          stoppedSince = 0;
        }
        setTimeout(poll, 300);
      })
      .catch(function(){ setTimeout(poll, 1000); });
  }
  setTimeout(poll, 100);
})();
</script>
</body></html>
`))
