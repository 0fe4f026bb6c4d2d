package lifecycle

import (
	"testing"
	"time"
)

// TestStopCause holds the reasons the manager words together with the
// causes metrics count them under.
func TestStopCause(t *testing.T) {
	now := time.Now()
	idle := &env{tmpl: &Template{IdleTimeout: time.Second}}
	idle.state.Store(int32(Ready))
	idle.lastActive.Store(now.Add(-time.Minute).UnixNano())
	old := &env{tmpl: &Template{IdleTimeout: time.Hour, MaxLifetime: time.Second}, readyAt: now.Add(-time.Minute)}
	old.state.Store(int32(Ready))
	old.lastActive.Store(now.UnixNano())
	for _, c := range []struct {
		e    *env
		want string
	}{{idle, StopIdle}, {old, StopMaxLifetime}} {
		reason, ok := reapReason(c.e, now)
		if !ok || StopCause(reason) != c.want {
			t.Errorf("reapReason %q (%v): cause %q, want %q", reason, ok, StopCause(reason), c.want)
		}
	}
	for reason, want := range map[string]string{
		"evicted: max_envs (to start x)":                               StopEvictEnvs,
		"evicted: min_available_memory (12 MiB available, to start x)": StopEvictMemory,
		"evicted: min_available_memory (12 MiB available)":             StopEvictMemory,
		"restart asked by an operator":                                 StopOperator,
		"destroy asked by an operator":                                 StopOperator,
		"stop asked by an operator":                                    StopOperator,
		"adopted env is not at its recorded address":                   StopOther,
	} {
		if got := StopCause(reason); got != want {
			t.Errorf("StopCause(%q) = %q, want %q", reason, got, want)
		}
	}
}
