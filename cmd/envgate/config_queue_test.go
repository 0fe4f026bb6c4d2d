package main

import (
	"strings"
	"testing"
)

func TestConfigMaxQueuedStarts(t *testing.T) {
	c, err := loadString(t, "limits: {max_starting: 3, max_queued_starts: 7}\n")
	if err != nil {
		t.Fatal(err)
	}
	if l := c.lifecycleLimits(); l.MaxStarting != 3 || l.MaxQueuedStarts != 7 {
		t.Fatalf("limits %+v, want max_starting 3, max_queued_starts 7", l)
	}
	d, err := loadString(t, "domains: [x.test]\naccess: [{allow_cidrs: [10.0.0.0/8]}]\n"+publicBasics)
	if err != nil {
		t.Fatal(err)
	}
	if l := d.lifecycleLimits(); l.MaxQueuedStarts != 0 {
		t.Fatalf("default max_queued_starts %d, want 0 (lifecycle's default, 4 × max_starting)", l.MaxQueuedStarts)
	}
	_, err = loadString(t, "limits:\n  max_queued_starts: -1\n")
	if err == nil || !strings.Contains(err.Error(), "envgate.yaml") || !strings.Contains(err.Error(), ":2: limits.max_queued_starts:") {
		t.Fatalf("negative max_queued_starts: %v, want an error naming file, line and field", err)
	}
}
