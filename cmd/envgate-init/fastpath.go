//go:build cgo && linux

// With cgo, fastpath.c's constructor does the trampoline's work before
// the Go runtime starts (see that file); main runs only when it left the
// work to the Go path. Without cgo this file and fastpath.c are not
// built, and main's trampoline.Run does it all.
//
// Always linked statically (a C compiler and a static libc, libc6-dev,
// are needed for a cgo build of this command): the isolated env's init
// runs as root with the env's environment, which a dynamic loader would
// obey (LD_PRELOAD, LD_LIBRARY_PATH naming a path the env's code can
// write) before the constructor runs. The Go path alone is static too.

package main

// #cgo LDFLAGS: -static
import "C"
