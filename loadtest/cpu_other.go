//go:build !unix

package loadtest

import "time"

// cpuTime is not measured on this platform: the report shows 0 cores.
func cpuTime() time.Duration { return 0 }
