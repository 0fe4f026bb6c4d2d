package lifecycle

import (
	"fmt"
	"strings"
	"testing"
)

// TestOutputBufferGrowsAndWraps: the buffer starts small, grows as lines
// come, stops at outputBufferBytes, and Tail gives the newest lines
// whole at every size.
func TestOutputBufferGrowsAndWraps(t *testing.T) {
	for _, n := range []int{0, 1, 3, 40, 500, 5000} {
		b := new(Output)
		var want []string
		for i := range n {
			line := fmt.Sprintf("line %d %s", i, strings.Repeat("x", i%97))
			b.WriteLine([]byte(line))
			want = append(want, line)
		}
		got := b.Tail(tailLines)
		if len(want) > tailLines {
			want = want[len(want)-tailLines:]
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%d lines: Tail = %q, want %q", n, got, want)
		}
		if c := cap(b.buf); c > outputBufferBytes || n < 5 && c > outputBufferFirst {
			t.Fatalf("%d lines: buffer capacity %d", n, c)
		}
	}
}
