package netns_test

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

func TestRenameKeepsNamespaceAndVeth(t *testing.T) {
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netnstest.Pool(3)})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.Create(context.Background(), "warm--1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(sb); err != nil {
			t.Error(err)
		}
	})
	addr, hostIf := sb.Addr(), sb.HostIf
	ino := func() string {
		var s string
		sb.Do(func() error {
			var err error
			s, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		})
		return s
	}
	before := ino()
	if err := m.Rename(sb, "feature-x"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.List(); !slices.Equal(ids, []string{"feature-x"}) {
		t.Fatalf("namespaces after rename: %v, want [feature-x]", ids)
	}
	if sb.ID != "feature-x" || sb.Name != m.Prefix()+"-feature-x" || sb.Addr() != addr || sb.HostIf != hostIf {
		t.Fatalf("sandbox after rename: %+v", sb)
	}
	if after := ino(); after != before || after == "" {
		t.Fatalf("namespace %q after rename, was %q", after, before)
	}
	// The renamed sandbox is adoptable under its new name.
	m2, _ := netns.New(netns.Config{Prefix: m.Prefix(), Pool: netnstest.Pool(3)})
	ad, err := m2.Adopt("feature-x")
	if err != nil {
		t.Fatalf("adopt renamed sandbox: %v", err)
	}
	ad.Close()
	if err := m.Rename(sb, "Not_A_Label"); err == nil {
		t.Fatal("renamed to an invalid id")
	}
}
