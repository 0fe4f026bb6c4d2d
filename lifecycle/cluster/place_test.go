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
