package access

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestLoadShareKeyAtOnce: processes that start together on a state_dir
// with no share key yet (the nodes of a cluster on their shared
// state_dir) all load one key: the one made first, never a file still
// being written, and no temporary file is left.
func TestLoadShareKeyAtOnce(t *testing.T) {
	for round := range 200 {
		dir := t.TempDir()
		path := filepath.Join(dir, "share.key")
		keys := make([]*ShareKey, 8)
		errs := make([]error, len(keys))
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() { keys[i], errs[i] = LoadShareKey(path) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, loader %d: %v", round, i, err)
			}
			if !bytes.Equal(keys[i].key, keys[0].key) {
				t.Fatalf("round %d: loader %d has another key than loader 0", round, i)
			}
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 {
			t.Fatalf("round %d: the state dir holds %v (%v), want share.key alone", round, ents, err)
		}
	}
}
