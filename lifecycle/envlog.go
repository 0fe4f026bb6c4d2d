package lifecycle

import (
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Log file defaults (Config.LogMaxSize, Config.LogMaxBackups).
const (
	defaultLogMaxSize    = 10 // MiB
	defaultLogMaxBackups = 2
)

// diskLog is one env's output file, LogDir/<env>.log, rotated by size by
// lumberjack. The file is opened by the first line written after a start
// and closed when the dev server's output ends (its pump returns), so an
// env that is not running holds no descriptor: thousands of stopped envs
// cost a struct each.
type diskLog struct {
	mu  sync.Mutex
	lj  *lumberjack.Logger
	buf []byte // guarded by mu; one line being written
}

func newDiskLog(dir, env string, maxSizeMiB, maxBackups int) *diskLog {
	return &diskLog{lj: &lumberjack.Logger{
		Filename:   filepath.Join(dir, env+".log"),
		MaxSize:    maxSizeMiB,
		MaxBackups: maxBackups,
		LocalTime:  false,
	}}
}

// writeLine appends one line, prefixed with its UTC time in RFC 3339
// with milliseconds (so readers can filter by age), as one write.
// Errors (a full disk) are dropped: the in-memory tail still has the line.
func (d *diskLog) writeLine(now time.Time, line []byte) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.buf = now.UTC().AppendFormat(d.buf[:0], LogTimeFormat)
	d.buf = append(d.buf, ' ')
	d.buf = append(d.buf, line...)
	d.buf = append(d.buf, '\n')
	_, _ = d.lj.Write(d.buf)
	if cap(d.buf) > maxLineBytes+64 {
		d.buf = nil
	}
	d.mu.Unlock()
}

// close closes the file; the next writeLine opens it again.
func (d *diskLog) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.lj.Close()
	d.buf = nil
	d.mu.Unlock()
}

// LogTimeFormat is the time at the start of each line of an env's log
// file: UTC, fixed width, so that lines sort and compare as strings.
const LogTimeFormat = "2006-01-02T15:04:05.000Z"

// remove closes the file and deletes it and its rotated backups
// (<env>-<time>.log, lumberjack's naming).
func (d *diskLog) remove() error {
	if d == nil {
		return nil
	}
	d.close()
	name := d.lj.Filename
	err := os.Remove(name)
	if os.IsNotExist(err) {
		err = nil
	}
	dir, base := filepath.Split(name)
	stem := regexp.QuoteMeta(base[:len(base)-len(".log")])
	backup := regexp.MustCompile(`^` + stem + `-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log(\.gz)?$`)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if backup.MatchString(e.Name()) {
			if rerr := os.Remove(filepath.Join(dir, e.Name())); rerr != nil && !os.IsNotExist(rerr) && err == nil {
				err = rerr
			}
		}
	}
	return err
}

// LogFile is where env name's output is kept on disk, or "" without
// Config.LogDir. The file may not exist yet.
func (m *Manager) LogFile(name string) string {
	if m.cfg.LogDir == "" {
		return ""
	}
	return filepath.Join(m.cfg.LogDir, name+".log")
}

// newDiskLogFor returns env name's log file writer, nil without LogDir.
func (m *Manager) newDiskLogFor(name string) *diskLog {
	if m.cfg.LogDir == "" {
		return nil
	}
	size, backups := m.cfg.LogMaxSize, m.cfg.LogMaxBackups
	if size <= 0 {
		size = defaultLogMaxSize
	}
	if backups <= 0 {
		backups = defaultLogMaxBackups
	}
	return newDiskLog(m.cfg.LogDir, name, size, backups)
}
