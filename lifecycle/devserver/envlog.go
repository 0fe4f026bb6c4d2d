package devserver

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// diskLog is one env's output file, LogDir/<env>.log, rotated by size:
// past maxSize the file becomes <env>.log.1, .1 becomes .2 and so on, and
// the oldest beyond backups is overwritten. The file is opened by the
// first line written after a start and closed when the dev server's
// output ends (its pump returns), so an env that is not running holds no
// descriptor: thousands of stopped envs cost a struct each. It is also
// closed after logIdleClose without output, and opened again by the next
// line: most dev servers say a few lines as they boot and then little, and
// every descriptor the gateway holds is copied and closed again at each
// dev server's fork and exec (with 2,000 live envs, a descriptor per env
// cost about 0.7 ms of CPU per start).
//
// Not lumberjack, which this replaced: it lists the whole directory on
// every open, and every env's log lies in one directory, so each env
// start read 2,000 entries at 2,000 envs (8% of the gateway's CPU while
// envs started at 1,000 live); and it starts a goroutine per logger that
// never ends, one per env name ever seen.
type diskLog struct {
	mu      sync.Mutex
	path    string
	maxSize int64 // bytes
	backups int
	f       *os.File // nil when closed
	size    int64    // of f
	buf     []byte   // one line being written
	// idle closes f that long after the last line (0: never); timer
	// does it, last is the last line's time.
	idle  time.Duration
	last  time.Time
	timer *time.Timer
}

// logIdleClose is how long an env's log file stays open after its last
// line.
const logIdleClose = time.Second

func newDiskLog(dir, env string, maxSizeMiB, maxBackups int) *diskLog {
	return &diskLog{
		path:    filepath.Join(dir, env+".log"),
		maxSize: int64(maxSizeMiB) << 20,
		backups: maxBackups,
		idle:    logIdleClose,
	}
}

// writeLine appends one line, prefixed with its UTC time in RFC 3339
// with milliseconds (so readers can filter by age), as one write.
// Errors (a full disk) are dropped: the in-memory tail still has the line.
func (d *diskLog) writeLine(now time.Time, line []byte) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.buf = now.UTC().AppendFormat(d.buf[:0], lifecycle.LogTimeFormat)
	d.buf = append(d.buf, ' ')
	d.buf = append(d.buf, line...)
	d.buf = append(d.buf, '\n')
	d.write(d.buf)
	if cap(d.buf) > maxLineBytes+64 {
		d.buf = nil
	}
	d.last = now
	if d.f != nil && d.timer == nil && d.idle > 0 {
		d.timer = time.AfterFunc(d.idle, d.closeIdle)
	}
	d.mu.Unlock()
}

// closeIdle closes the file if no line came for d.idle, else looks again
// when that much time will have passed since the last one.
func (d *diskLog) closeIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timer = nil
	if d.f == nil {
		return
	}
	if wait := d.idle - time.Since(d.last); wait > 0 {
		d.timer = time.AfterFunc(wait, d.closeIdle)
		return
	}
	d.f.Close()
	d.f = nil
}

// write writes b to the file, opening or rotating it first as needed.
// Called with mu held.
func (d *diskLog) write(b []byte) {
	if d.f != nil && d.size > 0 && d.size+int64(len(b)) > d.maxSize {
		d.f.Close()
		d.f = nil
		d.rotate()
	}
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return
		}
		d.f, d.size = f, fi.Size()
		if d.size > 0 && d.size+int64(len(b)) > d.maxSize {
			d.f.Close()
			d.f = nil
			d.rotate()
			if d.f, err = os.OpenFile(d.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
				return
			}
			d.size = 0
		}
	}
	n, _ := d.f.Write(b)
	d.size += int64(n)
}

// rotate moves the closed file to .1, .1 to .2 and so on; without
// backups it deletes the file. Called with mu held.
func (d *diskLog) rotate() {
	if d.backups <= 0 {
		os.Remove(d.path)
		return
	}
	for i := d.backups; i > 1; i-- {
		os.Rename(d.backupPath(i-1), d.backupPath(i))
	}
	os.Rename(d.path, d.backupPath(1))
}

func (d *diskLog) backupPath(i int) string { return d.path + "." + strconv.Itoa(i) }

// close closes the file; the next writeLine opens it again.
func (d *diskLog) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	d.buf = nil
	d.mu.Unlock()
}

// remove closes the file and deletes it and its rotated backups: .1 to
// .<backups>, and those an older envgate left under lumberjack's naming
// (<env>-<time>.log).
func (d *diskLog) remove() error {
	if d == nil {
		return nil
	}
	d.close()
	d.mu.Lock()
	defer d.mu.Unlock()
	names := []string{d.path}
	for i := 1; i <= max(d.backups, defaultLogMaxBackups); i++ {
		names = append(names, d.backupPath(i))
	}
	stem := strings.TrimSuffix(d.path, ".log")
	old, _ := filepath.Glob(globEscape(stem) + "-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*.log*")
	names = append(names, old...)
	var errs []error
	for _, n := range names {
		if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// globEscape escapes filepath.Match's metacharacters in s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
