package main

import (
	"os"
	"testing"
)

// scaleTestsEnv names the variable that enables the scale tests.
const scaleTestsEnv = "ENVGATE_SCALE_TESTS"

// scaleTest skips t unless ENVGATE_SCALE_TESTS=1. The scale tests
// (thousands of envs, a start storm) assert what the machine's CPUs and
// memory allow, so they must not share the two cores with the rest of the
// suite, which `go test ./...` runs a package per core: `make test` runs
// them on their own, after the suite (see the Makefile).
func scaleTest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a scale test; skipped in -short")
	}
	if os.Getenv(scaleTestsEnv) != "1" {
		t.Skip("a scale test: runs alone, after the suite, in `make test` (set " + scaleTestsEnv + "=1 to run it here)")
	}
}
