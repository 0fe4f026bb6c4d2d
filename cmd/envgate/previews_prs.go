package main

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/envgate/envgate/lifecycle/cluster/sharedfile"
	"github.com/rs/zerolog"
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

// prMap is the open pull requests by number, kept in a file of
// state_dir. Its methods are safe for concurrent use, by the goroutines
// of one gateway and by the nodes of a cluster, which share state_dir.
//
// The file is the only copy, changed through sharedfile.Update (read,
// change, write back, under an flock of prsFile.lock) and read whole
// for each look-up. So nodes that record pull requests and deployments
// at the same time (the node a webhook reached, and every node's own
// periodic refresh) never overwrite each other's records, and each sees
// the others' at once: no node needs to be the one writer, and none
// keeps a copy that goes stale. Changes come at the rate of webhooks, so
// reading a small file each time costs nothing that matters.
type prMap struct {
	path string
	log  zerolog.Logger
}

// loadPRMap returns the map kept at path, after checking that the file,
// if there is one, can be read.
func loadPRMap(path string, log zerolog.Logger) (*prMap, error) {
	m := &prMap{path: path, log: log}
	if _, err := m.read(); err != nil {
		return nil, err
	}
	return m, nil
}

// read returns the pull requests the file holds; a missing file is an
// empty map.
func (m *prMap) read() (map[int]*pullRequest, error) {
	b, err := sharedfile.Read(m.path)
	if err != nil {
		return nil, fmt.Errorf("previews: %w", err)
	}
	return m.parse(b)
}

// parse returns the pull requests of b, the file's content.
func (m *prMap) parse(b []byte) (map[int]*pullRequest, error) {
	prs := make(map[int]*pullRequest)
	if len(b) == 0 {
		return prs, nil
	}
	var f struct {
		PullRequests []*pullRequest `json:"pull_requests"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("previews: %s: %w (remove it to forget the pull requests it lists)", m.path, err)
	}
	for _, pr := range f.PullRequests {
		if pr != nil && pr.Number > 0 {
			prs[pr.Number] = pr
		}
	}
	return prs, nil
}

// view returns the pull requests for a read; on an error (logged) none.
func (m *prMap) view() map[int]*pullRequest {
	prs, err := m.read()
	if err != nil {
		m.log.Warn().Err(err).Msg("read the pull requests previews know")
		return nil
	}
	return prs
}

// update applies change to the pull requests under the file's lock,
// and writes them back if change reports that it changed them.
func (m *prMap) update(change func(prs map[int]*pullRequest) bool) error {
	return sharedfile.Update(m.path, func(old []byte) ([]byte, error) {
		prs, err := m.parse(old)
		if err != nil {
			return nil, err
		}
		if !change(prs) {
			return old, nil
		}
		return encodePRs(prs)
	})
}

// opened records pull request number of branch (and its env, if known).
func (m *prMap) opened(number int, branch, env string) error {
	return m.update(func(prs map[int]*pullRequest) bool {
		pr := prs[number]
		if pr == nil {
			pr = &pullRequest{Number: number}
			prs[number] = pr
		} else if pr.Branch == branch && (env == "" || pr.Env == env) {
			return false
		}
		if pr.Branch != branch {
			pr.Deployments = nil // another branch's env, another env's deployments
		}
		pr.Branch = branch
		if env != "" {
			pr.Env = env
		}
		return true
	})
}

// deployed records deployment id of env for the pull requests of its
// branch.
func (m *prMap) deployed(env string, id int64) error {
	return m.update(func(prs map[int]*pullRequest) bool {
		changed := false
		for _, pr := range prs {
			if pr.Env == env && !slices.Contains(pr.Deployments, id) {
				pr.Deployments = append(pr.Deployments, id)
				changed = true
			}
		}
		return changed
	})
}

// byBranch returns the pull request of branch, if one is open.
func (m *prMap) byBranch(branch string) (pullRequest, bool) {
	for _, pr := range m.view() {
		if pr.Branch == branch {
			return *pr, true
		}
	}
	return pullRequest{}, false
}

// closed forgets pull request number and returns what was known of it.
func (m *prMap) closed(number int) (pullRequest, bool, error) {
	var was *pullRequest
	err := m.update(func(prs map[int]*pullRequest) bool {
		was = prs[number]
		delete(prs, number)
		return was != nil
	})
	if was == nil {
		return pullRequest{}, false, err
	}
	return *was, true, err
}

// deploymentsOf returns the deployments recorded for env.
func (m *prMap) deploymentsOf(env string) []int64 {
	var ids []int64
	for _, pr := range m.view() {
		if pr.Env == env {
			ids = append(ids, pr.Deployments...)
		}
	}
	return ids
}

// encodePRs returns the file's content for prs: the pull requests by
// number, in JSON.
func encodePRs(prs map[int]*pullRequest) ([]byte, error) {
	list := make([]*pullRequest, 0, len(prs))
	for _, pr := range prs {
		list = append(list, pr)
	}
	slices.SortFunc(list, func(a, b *pullRequest) int { return a.Number - b.Number })
	b, err := json.MarshalIndent(struct {
		PullRequests []*pullRequest `json:"pull_requests"`
	}{list}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
