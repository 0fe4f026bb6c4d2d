package loadtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
)

type distKind int

const (
	distUniform distKind = iota
	distZipf
	distHotCold
)

// distSpec is a parsed --dist value.
type distSpec struct {
	kind distKind
	s    float64 // zipf exponent, > 1
	hot  int     // hotcold: size of the hot set
	p    float64 // hotcold: fraction of requests to never-seen hosts
}

// parseDist parses "uniform", "zipf:S" or "hotcold:H,P".
func parseDist(v string) (distSpec, error) {
	name, arg, hasArg := strings.Cut(v, ":")
	switch name {
	case "uniform":
		if hasArg {
			return distSpec{}, errors.New("uniform takes no parameter")
		}
		return distSpec{kind: distUniform}, nil
	case "zipf":
		s, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(s > 1) {
			return distSpec{}, errors.New("want zipf:S with S > 1, e.g. zipf:1.1")
		}
		return distSpec{kind: distZipf, s: s}, nil
	case "hotcold":
		hs, ps, ok := strings.Cut(arg, ",")
		h, herr := strconv.Atoi(hs)
		p, perr := strconv.ParseFloat(ps, 64)
		if !ok || herr != nil || perr != nil || h < 1 || !(p >= 0 && p < 1) {
			return distSpec{}, errors.New("want hotcold:H,P with H >= 1 hot hosts and 0 <= P < 1, e.g. hotcold:50,0.01")
		}
		return distSpec{kind: distHotCold, hot: h, p: p}, nil
	}
	return distSpec{}, fmt.Errorf("unknown distribution %q: want uniform, zipf:S or hotcold:H,P", name)
}

// String gives the canonical form of the spec for the report.
func (d distSpec) String() string {
	switch d.kind {
	case distZipf:
		return "zipf:" + strconv.FormatFloat(d.s, 'g', -1, 64)
	case distHotCold:
		return "hotcold:" + strconv.Itoa(d.hot) + "," + strconv.FormatFloat(d.p, 'g', -1, 64)
	}
	return "uniform"
}

// picker chooses the host index of each request. A picker is not safe for
// concurrent use: each goroutine that picks owns one.
type picker interface {
	pick() int
}

// newPicker returns a picker over n fixed hosts. fresh is shared by all
// pickers of a run so that every never-seen host is handed out once.
func newPicker(d distSpec, n int, seed uint64, fresh *atomic.Int64) picker {
	r := rand.New(rand.NewPCG(seed, 0x656e76676174)) //nolint:gosec // host choice, not security
	switch d.kind {
	case distZipf:
		if n <= 1 {
			return constPicker{}
		}
		return zipfPicker{z: rand.NewZipf(r, d.s, 1, uint64(n-1))}
	case distHotCold:
		return &hotColdPicker{r: r, hot: d.hot, p: d.p, fresh: fresh}
	}
	return uniformPicker{r: r, n: n}
}

type constPicker struct{}

func (constPicker) pick() int { return 0 }

type uniformPicker struct {
	r *rand.Rand
	n int
}

func (u uniformPicker) pick() int { return u.r.IntN(u.n) }

type zipfPicker struct{ z *rand.Zipf }

func (z zipfPicker) pick() int { return int(z.z.Uint64()) }

// hotColdPicker sends a fraction p of requests to hosts numbered from hot
// upwards, each index handed out once, and the rest uniformly to the hot set.
type hotColdPicker struct {
	r     *rand.Rand
	hot   int
	p     float64
	fresh *atomic.Int64
}

func (h *hotColdPicker) pick() int {
	if h.p > 0 && h.r.Float64() < h.p {
		return h.hot + int(h.fresh.Add(1)-1)
	}
	return h.r.IntN(h.hot)
}
