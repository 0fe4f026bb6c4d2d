package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// Env is one env in the API's answers.
type Env struct {
	Name string `json:"name"`
	// Node is the cluster node the env is on; "" outside cluster mode.
	Node             string     `json:"node,omitempty"`
	Template         string     `json:"template"`
	State            string     `json:"state"`
	Addr             string     `json:"addr,omitempty"`
	Pid              int        `json:"pid,omitempty"`
	StartedAt        *time.Time `json:"started_at,omitempty"`
	ReadyAt          *time.Time `json:"ready_at,omitempty"`
	LastActive       *time.Time `json:"last_active,omitempty"`
	IdleSeconds      float64    `json:"idle_seconds"`
	Requests         int64      `json:"requests"`
	InFlight         int64      `json:"in_flight"`
	MemoryBytes      int64      `json:"memory_bytes"`
	CPUSeconds       float64    `json:"cpu_seconds"`
	LastStartSeconds float64    `json:"last_start_seconds"`
	LastError        string     `json:"last_error,omitempty"`
	Failure          string     `json:"failure,omitempty"`
	DataDir          string     `json:"data_dir,omitempty"`
	LogFile          string     `json:"log_file,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() || t.Unix() == 0 {
		return nil
	}
	u := t.UTC()
	return &u
}

// EnvOf converts a lifecycle description to the API's form.
func EnvOf(d lifecycle.EnvDetail, now time.Time) Env {
	e := Env{
		Name: d.Name, Template: d.Template, State: d.State.String(), Pid: d.Pid,
		StartedAt: timePtr(d.StartedAt), ReadyAt: timePtr(d.ReadyAt), LastActive: timePtr(d.LastActive),
		Requests: d.Requests, InFlight: d.InFlight, MemoryBytes: d.MemoryBytes,
		CPUSeconds: d.CPUTime.Seconds(), LastStartSeconds: d.LastStart.Seconds(),
		LastError: d.LastError, Failure: d.Failure, DataDir: d.DataDir, LogFile: d.LogFile,
	}
	if d.Addr.IsValid() {
		e.Addr = d.Addr.String()
	}
	if e.LastActive != nil && d.InFlight == 0 {
		e.IdleSeconds = now.Sub(d.LastActive).Seconds()
	}
	return e
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	out, unreachable := h.envs(r.Context())
	if out == nil {
		out = []Env{}
	}
	if len(unreachable) > 0 {
		w.Header().Set(UnreachableHeader, unreachableValue(unreachable))
	}
	writeJSON(w, http.StatusOK, out)
}

// env wraps a handler of one env: it checks the name first, and in
// cluster mode sends the request to the node that owns the env, if
// another one does.
func (h *Handler) env(fn func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !h.cfg.ValidName(name) {
			writeError(w, http.StatusBadRequest, "not a valid env name: "+name)
			return
		}
		if h.forwarded(w, r, name) {
			return
		}
		fn(w, r, name)
	}
}

func (h *Handler) get(w http.ResponseWriter, _ *http.Request, name string) {
	d, ok := h.cfg.Envs.Detail(name)
	if !ok {
		writeError(w, http.StatusNotFound, errNotFound.Error()+": "+name+" (it has not run since the gateway started)")
		return
	}
	writeJSON(w, http.StatusOK, EnvOf(d, time.Now()))
}

// ActionResult is the body of a successful stop or destroy.
type ActionResult struct {
	Env     string `json:"env"`
	Action  string `json:"action"`
	Changed bool   `json:"changed"` // stop: it was running
}

func (h *Handler) stop(w http.ResponseWriter, _ *http.Request, name string) {
	stopped := h.cfg.Envs.Stop(name, "stop asked by an operator")
	writeJSON(w, http.StatusOK, ActionResult{Env: name, Action: "stop", Changed: stopped})
}

// restartTimeout bounds a restart's wait for the env to be ready; the
// template's own start timeout usually ends it first.
const restartTimeout = 5 * time.Minute

func (h *Handler) restart(w http.ResponseWriter, r *http.Request, name string) {
	ctx, cancel := context.WithTimeout(r.Context(), restartTimeout)
	defer cancel()
	d, err := h.cfg.Envs.Restart(ctx, name)
	if err != nil {
		code := http.StatusBadGateway
		switch {
		case errors.Is(err, lifecycle.ErrNoTemplate), errors.Is(err, lifecycle.ErrNotAllowed):
			code = http.StatusNotFound
		case errors.Is(err, lifecycle.ErrAtCapacity), errors.Is(err, lifecycle.ErrClosed):
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, EnvOf(d, time.Now()))
}

func (h *Handler) destroy(w http.ResponseWriter, _ *http.Request, name string) {
	if err := h.cfg.Envs.Destroy(name); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, lifecycle.ErrBusy) {
			code = http.StatusConflict
		}
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ActionResult{Env: name, Action: "destroy", Changed: true})
}
