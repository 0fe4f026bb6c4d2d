package cluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func TestChooseSpreadsAndIsStable(t *testing.T) {
	members := []Member{{Node: "a"}, {Node: "b"}, {Node: "c"}}
	count := map[string]int{}
	for i := range 3000 {
		m, ok := Choose(fmt.Sprintf("env%d", i), members)
		if !ok {
			t.Fatal("no choice")
		}
		count[m.Node]++
	}
	for _, m := range members {
		if c := count[m.Node]; c < 800 || c > 1200 {
			t.Errorf("node %s got %d of 3000 envs: %v", m.Node, c, count)
		}
	}
	// Losing node c moves only c's envs.
	for i := range 3000 {
		env := fmt.Sprintf("env%d", i)
		before, _ := Choose(env, members)
		after, _ := Choose(env, members[:2])
		if before.Node != "c" && before.Node != after.Node {
			t.Fatalf("%s moved from %s to %s when c left", env, before.Node, after.Node)
		}
	}
}

func TestChooseSkipsFullNodes(t *testing.T) {
	members := []Member{{Node: "a", Running: 2, MaxEnvs: 2}, {Node: "b", Running: 1, MaxEnvs: 2}}
	for i := range 100 {
		if m, _ := Choose(fmt.Sprintf("env%d", i), members); m.Node != "b" {
			t.Fatalf("chose full node %s", m.Node)
		}
	}
	members[1].Running = 2
	if _, ok := Choose("x", members); ok {
		t.Fatal("chose a node with no room")
	}
}

func TestChooseSkipsNodesBelowTheirMemoryFloor(t *testing.T) {
	members := []Member{
		{Node: "a", MemAvailable: 100 << 20, MinMemAvailable: 256 << 20},
		{Node: "b", MemAvailable: 4 << 30, MinMemAvailable: 256 << 20},
	}
	for i := range 100 {
		if m, _ := Choose(fmt.Sprintf("env%d", i), members); m.Node != "b" {
			t.Fatalf("chose node %s, below its memory floor", m.Node)
		}
	}
	members[1].MemAvailable = 200 << 20
	if _, ok := Choose("x", members); ok {
		t.Fatal("chose a node below its memory floor")
	}
	// Memory not known (0), or no floor: max_envs alone decides.
	members[0].MemAvailable, members[1].MinMemAvailable = 0, 0
	for i := range 100 {
		if _, ok := Choose(fmt.Sprintf("env%d", i), members); !ok {
			t.Fatal("no choice with memory unknown or no floor")
		}
	}
}

func TestCapacityMovedPublishesWhatPlacementNeeds(t *testing.T) {
	base := Member{Node: "a", Running: 3, MaxEnvs: 10, MemAvailable: 1600 << 20, MinMemAvailable: 256 << 20}
	for _, c := range []struct {
		name string
		now  func(m Member) Member
		want bool
	}{
		{"nothing changed", func(m Member) Member { return m }, false},
		{"one env more", func(m Member) Member { m.Running++; return m }, true},
		{"memory moved by 1/32", func(m Member) Member { m.MemAvailable -= 50 << 20; return m }, false},
		{"memory moved by 1/8", func(m Member) Member { m.MemAvailable += 200 << 20; return m }, true},
		{"memory below the floor", func(m Member) Member { m.MemAvailable = 200 << 20; return m }, true},
	} {
		if got := capacityMoved(base, c.now(base)); got != c.want {
			t.Errorf("%s: capacityMoved = %v, want %v", c.name, got, c.want)
		}
	}
	below := base
	below.MemAvailable = 250 << 20
	if now := below; !capacityMoved(below, func() Member { now.MemAvailable = 260 << 20; return now }()) {
		t.Error("crossing the floor upwards by less than 1/16: not published")
	}
}

func TestFenceRefusesOlderToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fence")
	if err := Fence(dir, "e", 10); err != nil {
		t.Fatal(err)
	}
	if err := Fence(dir, "e", 10); err != nil {
		t.Fatalf("same token again: %v", err)
	}
	if err := Fence(dir, "e", 12); err != nil {
		t.Fatal(err)
	}
	if err := Fence(dir, "e", 11); !errors.Is(err, ErrFenced) {
		t.Fatalf("older token: got %v, want ErrFenced", err)
	}
}
