package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// prsFile, in state_dir, holds the open pull requests previews know of,
// so that a restarted gateway still edits their comments, marks their
// deployments inactive and finds their envs when they close.
const prsFile = "previews-prs.json"

// pullRequest is what previews remember of one open pull (merge) request.
type pullRequest struct {
	Number int    `json:"number"`
	Branch string `json:"branch"`
	// Env is the branch's env when last seen: a pull request closed after
	// its branch is gone still finds its env.
	Env string `json:"env,omitempty"`
	// Deployments are the GitHub deployments made for the env, marked
	// inactive when it is destroyed.
	Deployments []int64 `json:"deployments,omitempty"`
}

// prMap is the open pull requests by number, kept in a file rewritten
// atomically at each change. Its methods are safe for concurrent use.
type prMap struct {
	path string

	mu  sync.Mutex
	prs map[int]*pullRequest // guarded by mu
}

// loadPRMap reads path; a missing file is an empty map.
func loadPRMap(path string) (*prMap, error) {
	m := &prMap{path: path, prs: make(map[int]*pullRequest)}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("previews: %w", err)
	}
	var f struct {
		PullRequests []*pullRequest `json:"pull_requests"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("previews: %s: %w (remove it to forget the pull requests it lists)", path, err)
	}
	for _, pr := range f.PullRequests {
		if pr != nil && pr.Number > 0 {
			m.prs[pr.Number] = pr
		}
	}
	return m, nil
}

// opened records pull request number of branch (and its env, if known).
func (m *prMap) opened(number int, branch, env string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pr := m.prs[number]
	if pr == nil {
		pr = &pullRequest{Number: number}
		m.prs[number] = pr
	}
	if pr.Branch == branch && (env == "" || pr.Env == env) {
		return nil
	}
	if pr.Branch != branch {
		pr.Deployments = nil // another branch's env, another env's deployments
	}
	pr.Branch = branch
	if env != "" {
		pr.Env = env
	}
	return m.saveLocked()
}

// deployed records deployment id of env for the pull requests of its
// branch, and reports whether one has it.
func (m *prMap) deployed(env string, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for _, pr := range m.prs {
		if pr.Env == env && !slices.Contains(pr.Deployments, id) {
			pr.Deployments = append(pr.Deployments, id)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return m.saveLocked()
}

// byBranch returns the pull request of branch, if one is open.
func (m *prMap) byBranch(branch string) (pullRequest, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, pr := range m.prs {
		if pr.Branch == branch {
			return *pr, true
		}
	}
	return pullRequest{}, false
}

// closed forgets pull request number and returns what was known of it.
func (m *prMap) closed(number int) (pullRequest, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pr, ok := m.prs[number]
	if !ok {
		return pullRequest{}, false, nil
	}
	delete(m.prs, number)
	return *pr, true, m.saveLocked()
}

// deploymentsOf returns the deployments recorded for env.
func (m *prMap) deploymentsOf(env string) []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []int64
	for _, pr := range m.prs {
		if pr.Env == env {
			ids = append(ids, pr.Deployments...)
		}
	}
	return ids
}

// saveLocked writes the map to a new file, syncs it and renames it over
// the old one, so a crash leaves one or the other whole. m.mu is held.
func (m *prMap) saveLocked() error {
	prs := make([]*pullRequest, 0, len(m.prs))
	for _, pr := range m.prs {
		prs = append(prs, pr)
	}
	slices.SortFunc(prs, func(a, b *pullRequest) int { return a.Number - b.Number })
	b, err := json.MarshalIndent(struct {
		PullRequests []*pullRequest `json:"pull_requests"`
	}{prs}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.path), 0o711); err != nil {
		return fmt.Errorf("previews: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(m.path), prsFile+".*")
	if err != nil {
		return fmt.Errorf("previews: %w", err)
	}
	_, werr := f.Write(append(b, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("previews: write %s: %w", m.path, err)
	}
	if err := os.Rename(f.Name(), m.path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("previews: %w", err)
	}
	return nil
}
