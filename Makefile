# envgate: see README.md. Tests and `run` need root (network namespaces).
GO      ?= go
BIN     := bin/envgate
PKGS    := ./...

.PHONY: all build run test test-short lint vuln bench fuzz clean

all: build

# The gateway and, beside it, the trampoline its dev servers start through
# (cmd/envgate-init: without it each such start re-executes the gateway's
# own, larger binary, a few milliseconds slower) and the demo dev server
# in a small binary (cmd/envgate-demo: what "{{.Self}} demo-server" in a
# template runs when it is there, about 5 ms of CPU less per env start).
# Those two are linked statically: they start at every env start, and a
# dynamically linked demo server (net's cgo resolver) spends about 0.5-2 ms
# of CPU in the dynamic loader and libc's start-up first. envgate-init is
# built with cgo where a C compiler (and libc.a) is: its C fast path
# (cmd/envgate-init/fastpath.c) then does the trampoline's work before the
# Go runtime starts, and an isolated env's init stays a single-threaded C
# process; without a C compiler it is the Go path alone (CGO_ENABLED=0).
INIT_CC := $(shell cc=$$($(GO) env CC 2>/dev/null); command -v "$$cc" >/dev/null 2>&1 && "$$cc" -print-file-name=libc.a | grep -q / && echo yes)

build:
	$(GO) build -o bin/ ./cmd/envgate
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/envgate-demo
ifeq ($(INIT_CC),yes)
	CGO_ENABLED=1 $(GO) build -ldflags '-linkmode external -extldflags -static' -o bin/ ./cmd/envgate-init
else
	@echo "no C compiler with a static libc: bin/envgate-init without its C fast path (apt-get install gcc libc6-dev)"
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/envgate-init
endif

# Start the gateway on its embedded default: <env>.localhost on http://localhost:8080.
run: build
	./$(BIN) serve

# The whole suite, as root, against the real kernel, with the race detector.
# Fuzz targets' seed corpora run as ordinary tests. Then the scale tests
# (1,000 live envs; a storm of 2,000 new names) on their own, so that no
# other package's tests share the CPUs they measure; the gateway they run
# is a separate, non-race binary either way.
SCALE_TESTS := ^(TestThousandEnvs|TestStartStormKeepsWarmEnvFast)$$

test:
	$(GO) test -race -count=1 -timeout 40m $(PKGS)
	ENVGATE_SCALE_TESTS=1 $(GO) test -count=1 -timeout 15m -run '$(SCALE_TESTS)' -v ./cmd/envgate/

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) tool staticcheck $(PKGS)

vuln:
	$(GO) tool govulncheck $(PKGS)

# Benchmarks (root, 2+ cores, < 10 min): Go micro-benchmarks, then loadtest/bench/run.sh,
# which compares envgate with direct, Caddy and nginx side by side, measures the gateway at
# 0-2,000 live envs (about 2-3 min; its curves drawn as loadtest/bench/results/scale.svg)
# and writes BENCHMARKS.md. BENCH_ONLY=scale runs one scenario (BENCH_ONLY=firewall: §1c alone;
# BENCH_ONLY=cluster: §6, two cluster nodes on an embedded etcd); see run.sh for the knobs.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	GO=$(GO) ./loadtest/bench/run.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseHost -fuzztime 60s ./gateway/
	$(GO) test -run '^$$' -fuzz FuzzDirectHead -fuzztime 60s ./gateway/
	$(GO) test -run '^$$' -fuzz FuzzValid -fuzztime 60s ./lifecycle/envname/

clean:
	rm -rf bin
