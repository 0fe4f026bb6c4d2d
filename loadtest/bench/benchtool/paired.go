package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Paired is what one configuration costs against a base, from paired
// measurements: each pair is the base's figure and the other's, taken
// side by side (loadtest/bench/firewall.sh interleaves them in
// palindromic order, so that drift and a neighbour's load hit both sides
// of a pair alike). Effect is the other against the base: (b/a − 1) in
// per cent, or b − a in the figures' own unit with -diff.
type Paired struct {
	N int `json:"n"`
	// Median of the pairs' effects, and their quartiles: the spread of
	// single pairs.
	Median float64 `json:"median"`
	Q1     float64 `json:"q1"`
	Q3     float64 `json:"q3"`
	// CILo and CIHi bound the median: a 95 % percentile bootstrap
	// interval (resampling the pairs), with a fixed seed so that a
	// report can be reproduced from its pairs.
	CILo float64 `json:"ci_lo"`
	CIHi float64 `json:"ci_hi"`
}

// runPaired reads pairs "a b", one per line, from stdin.
func runPaired(args []string) (Paired, error) {
	fs := flag.NewFlagSet("paired", flag.ContinueOnError)
	diff := fs.Bool("diff", false, "effect is b − a (default: (b/a − 1) in %)")
	resamples := fs.Int("resamples", 10000, "bootstrap resamples")
	if err := fs.Parse(args); err != nil {
		return Paired{}, err
	}
	effects, err := readEffects(os.Stdin, *diff)
	if err != nil {
		return Paired{}, err
	}
	return pairedSummary(effects, *resamples), nil
}

// readEffects parses pairs "a b" into their effects.
func readEffects(r io.Reader, diff bool) ([]float64, error) {
	var effects []float64
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("paired: line %d: want 2 numbers, got %q", line, sc.Text())
		}
		a, err1 := strconv.ParseFloat(f[0], 64)
		b, err2 := strconv.ParseFloat(f[1], 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("paired: line %d: %w", line, err)
		}
		if diff {
			effects = append(effects, b-a)
			continue
		}
		if a <= 0 {
			return nil, fmt.Errorf("paired: line %d: base %v is not positive", line, a)
		}
		effects = append(effects, (b/a-1)*100)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(effects) == 0 {
		return nil, errors.New("paired: no pairs")
	}
	return effects, nil
}

// pairedSummary is the median of effects, its quartiles and a bootstrap
// interval of the median, rounded to 0.01.
func pairedSummary(effects []float64, resamples int) Paired {
	s := slices.Clone(effects)
	slices.Sort(s)
	p := Paired{N: len(s), Median: quantile(s, 0.5), Q1: quantile(s, 0.25), Q3: quantile(s, 0.75)}
	rng := rand.New(rand.NewPCG(1, 2))
	meds := make([]float64, resamples)
	x := make([]float64, len(s))
	for i := range meds {
		for j := range x {
			x[j] = s[rng.IntN(len(s))]
		}
		slices.Sort(x)
		meds[i] = quantile(x, 0.5)
	}
	slices.Sort(meds)
	p.CILo, p.CIHi = p.Median, p.Median
	if resamples > 0 {
		p.CILo, p.CIHi = quantile(meds, 0.025), quantile(meds, 0.975)
	}
	for _, v := range []*float64{&p.Median, &p.Q1, &p.Q3, &p.CILo, &p.CIHi} {
		*v = math.Round(*v*100) / 100
	}
	return p
}

// quantile is the q-quantile of sorted s, interpolated between the two
// nearest ranks (the median of an even count is the mean of the middle
// two).
func quantile(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}
