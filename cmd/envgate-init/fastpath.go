//go:build cgo && linux

// With cgo, fastpath.c's constructor does the trampoline's work before
// the Go runtime starts (see that file); main runs only when it left the
// work to the Go path. Without cgo this file and fastpath.c are not
// built, and main's trampoline.Run does it all.

package main

import "C"
