package loadtest

import (
	"sync/atomic"
	"testing"
)

func TestParseDist(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // canonical form; "" means an error
	}{
		{"uniform", "uniform"},
		{"uniform:2", ""},
		{"zipf:1.1", "zipf:1.1"},
		{"zipf:0.9", ""},
		{"zipf:", ""},
		{"zipf:x", ""},
		{"hotcold:10,0.05", "hotcold:10,0.05"},
		{"hotcold:10,0", "hotcold:10,0"},
		{"hotcold:10", ""},
		{"hotcold:10,1.5", ""},
		{"hotcold:-1,0.1", ""},
		{"gauss", ""},
	} {
		d, err := parseDist(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("parseDist(%q) = %v, want an error", tc.in, d)
		case tc.want != "" && err != nil:
			t.Errorf("parseDist(%q): %v", tc.in, err)
		case tc.want != "" && d.String() != tc.want:
			t.Errorf("parseDist(%q) = %q, want %q", tc.in, d, tc.want)
		}
	}
}

func histogram(p picker, samples int) map[int]int {
	h := map[int]int{}
	for range samples {
		h[p.pick()]++
	}
	return h
}

func TestUniform(t *testing.T) {
	const n, samples = 10, 100000
	h := histogram(newPicker(distSpec{kind: distUniform}, n, 1, new(atomic.Int64)), samples)
	for i := range n {
		// Expected 10000 each; 4 sigma is ~380.
		if h[i] < 9500 || h[i] > 10500 {
			t.Errorf("host %d got %d of %d, want about %d", i, h[i], samples, samples/n)
		}
	}
	if len(h) != n {
		t.Errorf("picked %d distinct hosts, want %d", len(h), n)
	}
}

func TestZipfSkew(t *testing.T) {
	const n, samples = 100, 100000
	h := histogram(newPicker(distSpec{kind: distZipf, s: 1.5}, n, 1, new(atomic.Int64)), samples)
	for i := range h {
		if i < 0 || i >= n {
			t.Fatalf("picked host %d, outside 0..%d", i, n-1)
		}
	}
	// P(k) ∝ (1+k)^-1.5: host 0 gets ~2.8x host 1 and ~36x host 10, and
	// about 40% of all traffic.
	if !(h[0] > 2*h[1] && h[1] > h[2] && h[2] > h[10] && h[0] > 25*h[10]) {
		t.Errorf("not skewed: host0 %d host1 %d host2 %d host10 %d", h[0], h[1], h[2], h[10])
	}
	if share := float64(h[0]) / samples; share < 0.35 || share > 0.45 {
		t.Errorf("host 0 got %.2f of traffic, want about 0.40", share)
	}
	if p := newPicker(distSpec{kind: distZipf, s: 2}, 1, 1, new(atomic.Int64)); p.pick() != 0 {
		t.Error("zipf over one host must pick it")
	}
}

func TestHotCold(t *testing.T) {
	const hot, samples = 5, 100000
	var fresh atomic.Int64
	p := newPicker(distSpec{kind: distHotCold, hot: hot, p: 0.1}, hot, 7, &fresh)
	h := histogram(p, samples)
	var cold int
	for i, c := range h {
		if i >= hot {
			cold++
			if c != 1 {
				t.Fatalf("never-seen host %d picked %d times, want once", i, c)
			}
		}
	}
	if frac := float64(cold) / samples; frac < 0.09 || frac > 0.11 {
		t.Errorf("never-seen fraction %.3f, want about 0.1", frac)
	}
	if int64(cold) != fresh.Load() {
		t.Errorf("fresh counter %d, want %d", fresh.Load(), cold)
	}
	for i := range hot {
		if h[i] < 17000 || h[i] > 19000 { // 90000/5 each
			t.Errorf("hot host %d got %d, want about 18000", i, h[i])
		}
	}
	// A second picker sharing the counter never reuses an index.
	q := newPicker(distSpec{kind: distHotCold, hot: hot, p: 0.5}, hot, 8, &fresh)
	for range 1000 {
		if i := q.pick(); i >= hot && h[i] != 0 {
			t.Fatalf("host %d handed out twice", i)
		}
	}
}
