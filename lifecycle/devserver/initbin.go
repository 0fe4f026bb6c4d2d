package devserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// InitName is the trampoline binary's file name (cmd/envgate-init),
// looked for next to the gateway's executable.
const InitName = "envgate-init"

// initBinary is the program a dev server is started through when it needs
// the trampoline.
//
// The dev server's user need not be able to reach the gateway's binaries
// (/root/bin/envgate-init, say): the trampoline is opened once, here, by
// the gateway (O_PATH), and each child execs it as /proc/self/fd/N,
// through its own copy of that descriptor. The kernel resolves that magic
// link without looking at the directories on the way; only the file's
// own execute permission counts. The gateway's own binary, the fallback,
// is reached the same way through /proc/self/exe.
//
// Why a binary of its own: the gateway's binary runs the package
// initialisation of everything it imports (grpc, etcd, protobuf, ...)
// before main can become the trampoline, about 5 ms of CPU at each start
// that needs the trampoline; envgate-init imports the standard library
// and x/sys only.
type initBinary struct {
	fd   int    // O_PATH descriptor of envgate-init; -1 for the fallback
	path string // what a child execs
}

// initFDMin is the lowest descriptor number the init binary's descriptor
// gets. The child's copy must survive the fork's descriptor shuffle:
// os/exec moves the child's files to 0, 1, 2, 3 (outputFD), dup'ing some
// out of the way to the numbers just above them first.
const initFDMin = 100

// openInit opens the trampoline binary: path if set (it must be there),
// else InitName next to the running executable, else the running
// executable itself, with a warning.
func openInit(path string, log zerolog.Logger) (*initBinary, error) {
	explicit := path != ""
	if !explicit {
		exe, err := os.Executable()
		if err == nil {
			path = filepath.Join(filepath.Dir(exe), InitName)
		}
	}
	if path != "" {
		b, err := openInitPath(path)
		if err == nil {
			return b, nil
		}
		if explicit || !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	log.Warn().Str("want", path).Msg(InitName + " not found next to the gateway's binary: dev servers that need the trampoline " +
		"start through the gateway's own binary, a few milliseconds slower each (install " + InitName + " beside it)")
	return &initBinary{fd: -1, path: "/proc/self/exe"}, nil
}

// openInitPath opens path O_PATH at a descriptor number of initFDMin or
// above, after checking that it is a regular file its owner can execute.
func openInitPath(path string) (*initBinary, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("devserver: trampoline binary: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("devserver: trampoline binary %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 != 0o111 {
		return nil, fmt.Errorf("devserver: trampoline binary %s: want a regular file that everyone may execute (mode 0755)", path)
	}
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, initFDMin)
	if err != nil {
		return nil, fmt.Errorf("devserver: trampoline binary %s: %w", path, err)
	}
	return &initBinary{fd: high, path: "/proc/self/fd/" + strconv.Itoa(high)}, nil
}

func (b *initBinary) close() error {
	if b == nil || b.fd < 0 {
		return nil
	}
	err := unix.Close(b.fd)
	b.fd = -1
	return err
}
