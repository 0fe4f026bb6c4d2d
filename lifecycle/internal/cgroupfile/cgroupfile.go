// Package cgroupfile reads the two shapes of cgroup files envgate needs:
// one integer (memory.current, memory.max, cpuacct.usage) and a stat
// file of "key value" lines (memory.stat, cpu.stat). prometheus/procfs
// reads /proc but not cgroupfs.
package cgroupfile

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Int reads a file holding one integer ("max" is an error).
func Int(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
}

// Stat returns key's value in a stat file of "key value" lines, or 0.
func Stat(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
