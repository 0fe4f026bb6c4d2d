package netns

import (
	"errors"
	"net/netip"
	"testing"
)

func TestPoolSlots(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("10.213.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != 16384 {
		t.Fatalf("size = %d, want 16384", p.Size())
	}
	for _, tc := range []struct {
		i          int
		host, peer string
	}{
		{0, "10.213.0.1", "10.213.0.2"},
		{1, "10.213.0.5", "10.213.0.6"},
		{64, "10.213.1.1", "10.213.1.2"},
		{16383, "10.213.255.253", "10.213.255.254"},
	} {
		s := p.Slot(tc.i)
		if s.Host.String() != tc.host || s.Peer.String() != tc.peer {
			t.Errorf("slot %d = %s/%s, want %s/%s", tc.i, s.Host, s.Peer, tc.host, tc.peer)
		}
		if got, ok := p.indexOf(s.Peer.AsSlice()); !ok || got != tc.i {
			t.Errorf("indexOf(%s) = %d,%v want %d", s.Peer, got, ok, tc.i)
		}
	}
	if _, ok := p.indexOf(netip.MustParseAddr("10.214.0.1").AsSlice()); ok {
		t.Error("indexOf outside the pool reported ok")
	}
}

func TestPoolAllocateReleaseExhaust(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("192.168.7.0/28")) // 4 slots
	if err != nil {
		t.Fatal(err)
	}
	taken := func(s Slot) bool { return s.Index == 1 } // someone else's address
	seen := map[int]bool{}
	for range 3 {
		s, err := p.Allocate(taken)
		if err != nil {
			t.Fatal(err)
		}
		if s.Index == 1 || seen[s.Index] {
			t.Fatalf("allocated slot %d twice or a taken one", s.Index)
		}
		seen[s.Index] = true
	}
	if _, err := p.Allocate(taken); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("allocate on a full pool: err = %v, want ErrPoolExhausted", err)
	}
	p.Release(2)
	s, err := p.Allocate(taken)
	if err != nil || s.Index != 2 {
		t.Fatalf("after release of 2: got %d, %v; want slot 2 reclaimed", s.Index, err)
	}
	if p.InUse() != 3 {
		t.Fatalf("in use = %d, want 3", p.InUse())
	}
	if p.Reserve(2) {
		t.Fatal("Reserve of an allocated slot succeeded")
	}
}

func TestNewPoolRejects(t *testing.T) {
	for _, s := range []string{"10.0.0.0/31", "fd00::/64"} {
		if _, err := NewPool(netip.MustParsePrefix(s)); err == nil {
			t.Errorf("NewPool(%s) succeeded", s)
		}
	}
}

func TestNames(t *testing.T) {
	for _, p := range []string{"eg", "t1234567", "a"} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "1eg", "eg-x", "toolongxx", "EG"} {
		if ValidatePrefix(p) == nil {
			t.Errorf("ValidatePrefix(%q) accepted", p)
		}
	}
	if n := hostIfName("t1234567", 16383); len(n) > 15 {
		t.Errorf("host link name %q longer than IFNAMSIZ-1", n)
	}
	for _, tc := range []struct {
		name string
		slot int
		ok   bool
	}{
		{"eg-12", 12, true}, {"eg-012", 0, false}, {"egx-1", 0, false}, {"eg-", 0, false}, {"eg-1a", 0, false},
	} {
		slot, ok := parseHostIfName("eg", tc.name)
		if ok != tc.ok || slot != tc.slot {
			t.Errorf("parseHostIfName(%q) = %d,%v want %d,%v", tc.name, slot, ok, tc.slot, tc.ok)
		}
	}
	if id, ok := idFromNsName("eg", "eg-feature-x"); !ok || id != "feature-x" {
		t.Errorf("idFromNsName = %q,%v", id, ok)
	}
	if _, ok := idFromNsName("eg", "egg-feature-x"); ok {
		t.Error("idFromNsName accepted another prefix")
	}
}
