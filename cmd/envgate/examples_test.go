package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The README's and deploy/examples' configs must load: docs stay true to
// the code.
func TestDocumentedConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../../deploy/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	for _, f := range files {
		if _, err := LoadConfig(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README has no yaml block")
	}
	for i, b := range blocks {
		if _, err := parseConfig("README.md yaml block "+string(rune('1'+i)), b[1]); err != nil {
			t.Errorf("README yaml block %d: %v", i+1, err)
		}
	}
}
