package devserver

import (
	"fmt"
	"strconv"
	"syscall"

	"github.com/envgate/envgate/lifecycle"
)

// checkRecorded vets a state file record before Recover signals or adopts
// its process: the file is outside input (a stale, damaged or edited
// file), and its pid ends up in kill(-pid): 0 is the gateway's own process
// group, 1 (as -1) every process it may signal, and a reused pid someone
// else's process. So the pid must be above 1, lead its own process group,
// and live in the network namespace the record names, which must be a
// namespace of its own, not the gateway's. (The start-time check that
// follows in Recover tells a reused pid apart within that namespace.)
func checkRecorded(r lifecycle.ProcessRecord) error {
	if r.Pid <= 1 {
		return fmt.Errorf("%w: pid %d", lifecycle.ErrRecordRefused, r.Pid)
	}
	if r.Namespace == "" {
		return fmt.Errorf("%w: pid %d: no network namespace recorded", lifecycle.ErrRecordRefused, r.Pid)
	}
	var want, have, host syscall.Stat_t
	if err := syscall.Stat(r.Namespace, &want); err != nil {
		return fmt.Errorf("%w: pid %d: recorded namespace: %w", lifecycle.ErrRecordRefused, r.Pid, err)
	}
	if err := syscall.Stat("/proc/self/ns/net", &host); err != nil {
		return fmt.Errorf("%w: own namespace: %w", lifecycle.ErrRecordRefused, err)
	}
	if want.Dev == host.Dev && want.Ino == host.Ino {
		return fmt.Errorf("%w: pid %d: recorded namespace %s is the gateway's own", lifecycle.ErrRecordRefused, r.Pid, r.Namespace)
	}
	if err := syscall.Stat("/proc/"+strconv.Itoa(r.Pid)+"/ns/net", &have); err != nil {
		return fmt.Errorf("%w: pid %d: %w", lifecycle.ErrRecordRefused, r.Pid, err)
	}
	if have.Dev != want.Dev || have.Ino != want.Ino {
		return fmt.Errorf("%w: pid %d is not in the recorded namespace %s", lifecycle.ErrRecordRefused, r.Pid, r.Namespace)
	}
	if pgid, err := syscall.Getpgid(r.Pid); err != nil || pgid != r.Pid {
		return fmt.Errorf("%w: pid %d does not lead its process group (pgid %d, %v)", lifecycle.ErrRecordRefused, r.Pid, pgid, err)
	}
	return nil
}
