package lifecycle

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RenamingNetwork is a Network that can give a sandbox made ahead of time
// to an env: the warm pool needs one. NetnsNetwork is one.
type RenamingNetwork interface {
	Network
	// Rename gives sb the name of env name.
	Rename(sb Sandbox, name string) error
}

// spareMarker starts the names of warm spares ("warm--1"). While the warm
// pool is on, no env may have such a name.
const spareMarker = "warm--"

// warmPool keeps Config.WarmPool sandboxes ready, so that a cold start
// only renames one and spawns the dev server. A background loop refills
// it after each take.
type warmPool struct {
	net  RenamingNetwork
	size int
	wake chan struct{} // a take happened: refill

	mu     sync.Mutex
	spares []Sandbox // guarded by mu
	seq    int       // guarded by mu; numbers spare names
}

func newWarmPool(cfg Config) (*warmPool, error) {
	if cfg.WarmPool <= 0 {
		return nil, nil
	}
	rn, ok := cfg.Network.(RenamingNetwork)
	if !ok {
		return nil, errors.New("lifecycle: Config.WarmPool needs a Network that can rename sandboxes")
	}
	return &warmPool{net: rn, size: cfg.WarmPool, wake: make(chan struct{}, 1)}, nil
}

// take gives a spare to env name, or returns nil when none is ready.
func (w *warmPool) take(name string) Sandbox {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	var sb Sandbox
	if n := len(w.spares); n > 0 {
		sb, w.spares = w.spares[n-1], w.spares[:n-1]
	}
	w.mu.Unlock()
	if sb == nil {
		w.refill() // the pool ran dry: refill now
		return nil
	}
	if err := w.net.Rename(sb, name); err != nil {
		w.net.Destroy(sb)
		return nil
	}
	return sb
}

// refill asks the refill loop to top the pool up. A start calls it when
// it ends, not when it takes a spare: making a sandbox alongside the dev
// server's boot would compete with it for the CPUs.
func (w *warmPool) refill() {
	if w == nil {
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// refillLoop keeps the pool full until ctx ends, then destroys the spares.
func (m *Manager) refillLoop() {
	w := m.warm
	defer func() {
		w.mu.Lock()
		spares := w.spares
		w.spares = nil
		w.mu.Unlock()
		for _, sb := range spares {
			if err := w.net.Destroy(sb); err != nil {
				m.log.Error().Err(err).Msg("destroy warm spare")
			}
		}
	}()
	for {
		for m.ctx.Err() == nil {
			w.mu.Lock()
			full := len(w.spares) >= w.size
			w.seq++
			name := spareMarker + strconv.Itoa(w.seq)
			w.mu.Unlock()
			if full {
				break
			}
			sb, err := w.net.Create(m.ctx, name)
			if err != nil {
				if m.ctx.Err() == nil {
					m.log.Warn().Err(err).Msg("warm pool: cannot make a spare sandbox; retrying in 1s")
					select {
					case <-m.ctx.Done():
					case <-time.After(time.Second):
					}
				}
				continue
			}
			w.mu.Lock()
			w.spares = append(w.spares, sb)
			w.mu.Unlock()
		}
		select {
		case <-m.ctx.Done():
			return
		case <-w.wake:
		}
	}
}

// startWarmLocked starts the refill loop, once; m.mu must be held and m
// not closed. The first Acquire calls it, not New: the caller's start-up
// cleanup (Recover, then netns GC) would remove spares made before it.
func (m *Manager) startWarmLocked() {
	if m.warm != nil && !m.warmOn {
		m.warmOn = true
		m.wg.Go(m.refillLoop)
	}
}

// reservedName reports whether name is kept for warm spares.
func (m *Manager) reservedName(name string) bool {
	return m.warm != nil && strings.HasPrefix(name, spareMarker)
}
