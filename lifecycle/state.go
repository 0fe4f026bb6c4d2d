package lifecycle

// State is where an env is in its life.
type State int32

// The env states. An env that was never started, or has been reaped, is
// Stopped.
const (
	Stopped State = iota
	Starting
	Ready
	Stopping
	Failed
)

func (s State) String() string {
	switch s {
	case Stopped:
		return "stopped"
	case Starting:
		return "starting"
	case Ready:
		return "ready"
	case Stopping:
		return "stopping"
	case Failed:
		return "failed"
	}
	return "unknown"
}
