package main

import (
	"os"
	"path/filepath"
)

// demoName is cmd/envgate-demo's file name, looked for beside the envgate
// binary.
const demoName = "envgate-demo"

// demoProgram is the program a template command "{{.Self}} demo-server
// ..." runs, given self, the envgate binary: envgate-demo beside it when
// that is a regular file everyone may execute, else self. Both take the
// same arguments; envgate-demo starts in about a millisecond, where the
// envgate binary's package initialisation alone costs about 5 ms of CPU
// at each env start.
func demoProgram(self string) string {
	p := filepath.Join(filepath.Dir(self), demoName)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 == 0o111 {
		return p
	}
	return self
}
