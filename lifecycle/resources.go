package lifecycle

// Resources limit what one env's processes may use together, through a
// cgroup of their own. A zero field sets no limit.
type Resources struct {
	// Memory is the most memory, in bytes, the env's processes may use;
	// past it the kernel reclaims, then OOM-kills inside the env only.
	Memory int64
	// CPUs is the CPU time the env may use, in CPUs (0.5 is half of one).
	CPUs float64
	// Pids caps the env's processes and threads: a fork bomb stops there.
	Pids int64
}

// Any reports whether r sets a limit.
func (r Resources) Any() bool { return r.Memory > 0 || r.CPUs > 0 || r.Pids > 0 }
