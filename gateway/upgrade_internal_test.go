package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
)

// frame builds a WebSocket frame with an n-byte payload of b.
func frame(n int, masked bool, b byte) []byte {
	f := []byte{0x82}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		f = append(f, mask|byte(n))
	case n < 1<<16:
		f = append(f, mask|126, 0, 0)
		binary.BigEndian.PutUint16(f[2:], uint16(n))
	default:
		f = append(f, mask|127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(f[2:], uint64(n))
	}
	if masked {
		f = append(f, 1, 2, 3, 4)
	}
	return append(f, bytes.Repeat([]byte{b}, n)...)
}

func TestWSFramesFindsBoundaries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sizes  []int
		masked bool
	}{
		{"small", []int{0, 1, 125}, false},
		{"16-bit lengths", []int{126, 1000, 65535}, false},
		{"64-bit length", []int{65536, 3}, false},
		{"masked", []int{5, 300}, true},
	} {
		for _, chunk := range []int{1, 2, 3, 7, 4096} {
			var stream []byte
			var ends []int // offsets where frames end
			for _, n := range tc.sizes {
				stream = append(stream, frame(n, tc.masked, 'x')...)
				ends = append(ends, len(stream))
			}
			var f wsFrames
			var got []int
			for off := 0; off < len(stream); {
				p := stream[off:min(off+chunk, len(stream))]
				if f.atBoundary() {
					// stop would take nothing: step into the next frame.
					off += f.consume(p[:1], false)
				} else {
					off += f.consume(p, true)
				}
				if f.atBoundary() {
					got = append(got, off)
				}
			}
			if !equalInts(got, ends) {
				t.Errorf("%s, chunk %d: boundaries at %v, want %v", tc.name, chunk, got, ends)
			}
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pipeConn returns an upgradedConn on one end of a pipe and a function
// returning everything the other end read until the conn closed.
func pipeConn(ws bool) (*upgradedConn, func() []byte) {
	server, client := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	return &upgradedConn{Conn: server, ws: ws}, func() []byte { return <-got }
}

// The close frame goes between frames, never inside one: a frame in
// flight when the grace ends is finished first, and nothing after it is
// sent.
func TestGoAwayWaitsForFrameBoundary(t *testing.T) {
	c, read := pipeConn(true)
	first, second := frame(1000, false, 'a'), frame(10, false, 'b')
	if _, err := c.Write(first[:300]); err != nil {
		t.Fatal(err)
	}
	c.goAway() // mid-frame: must not write yet
	n, err := c.Write(append(first[300:], second...))
	if n != len(first)-300 || !errors.Is(err, errGoneAway) {
		t.Fatalf("write after goAway: %d, %v; want %d, errGoneAway", n, err, len(first)-300)
	}
	want := append(append([]byte{}, first...), closeFrame(1001, goAwayReason)...)
	if got := read(); !bytes.Equal(got, want) {
		t.Fatalf("client read %d bytes ending %q, want the first frame then the close frame", len(got), got[max(0, len(got)-30):])
	}
	if _, err := c.Write(second); err == nil {
		t.Fatal("write after close succeeded")
	}
}

func TestGoAwayAtBoundaryClosesAtOnce(t *testing.T) {
	c, read := pipeConn(true)
	f := frame(20, false, 'a')
	if _, err := c.Write(f); err != nil {
		t.Fatal(err)
	}
	c.goAway()
	want := append(append([]byte{}, f...), closeFrame(1001, goAwayReason)...)
	if got := read(); !bytes.Equal(got, want) {
		t.Fatalf("client read %q, want %q", got, want)
	}
}

func TestGoAwayClosesOtherUpgrades(t *testing.T) {
	c, read := pipeConn(false)
	if _, err := c.Write([]byte("raw bytes")); err != nil {
		t.Fatal(err)
	}
	c.goAway()
	if got := read(); string(got) != "raw bytes" {
		t.Fatalf("client read %q", got)
	}
}

func TestCloseFrame(t *testing.T) {
	got := closeFrame(1001, "bye")
	want := []byte{0x88, 5, 0x03, 0xe9, 'b', 'y', 'e'}
	if !bytes.Equal(got, want) {
		t.Fatalf("closeFrame = % x, want % x", got, want)
	}
}

func TestWantsJSON(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		json   bool
	}{
		{nil, true}, // curl without -H, many API clients
		{[]string{"*/*"}, true},
		{[]string{"application/json"}, true},
		{[]string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, false}, // a browser
		{[]string{"application/json", "text/html"}, false},
		{[]string{"application/xhtml+xml"}, false},
	} {
		r, _ := http.NewRequest("GET", "http://x.localhost/", nil)
		for _, v := range tc.accept {
			r.Header.Add("Accept", v)
		}
		if got := wantsJSON(r); got != tc.json {
			t.Errorf("Accept %q: wantsJSON %v, want %v", tc.accept, got, tc.json)
		}
	}
}
