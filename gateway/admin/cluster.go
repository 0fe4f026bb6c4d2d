package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Cluster is what the API needs, in cluster mode, to answer for the whole
// cluster: the env list takes in every live node's envs (each with its
// node), and an action on an env that another node owns (get, stop,
// restart, destroy, logs) is forwarded to that node's API, which answers
// for its own envs only (a Handler without Cluster).
type Cluster interface {
	// Node is this node's name.
	Node() string
	// Peers are the other live nodes.
	Peers() []Peer
	// OwnerAddr is the address of the other node that owns env; "" when
	// this node or none does.
	OwnerAddr(env string) string
	// Do sends method target to the API of the node at addr.
	Do(ctx context.Context, addr, method, target string) (*http.Response, error)
	// Forward proxies r to the API of the node at addr.
	Forward(w http.ResponseWriter, r *http.Request, addr string)
}

// Peer is another live node of the cluster.
type Peer struct {
	Node, Addr string
}

// UnreachableHeader lists, on a cluster-wide env list, the nodes that did
// not answer in time: their envs are missing from it.
const UnreachableHeader = "Envgate-Unreachable-Nodes"

// peerTimeout bounds the wait for each other node's list.
const peerTimeout = 5 * time.Second

// envs lists this node's envs and, in cluster mode, the other live
// nodes' too, sorted by name; unreachable are the nodes that did not
// answer.
func (h *Handler) envs(ctx context.Context) (out []Env, unreachable []string) {
	now := time.Now()
	c := h.cfg.Cluster
	node := ""
	if c != nil {
		node = c.Node()
	}
	for _, d := range h.cfg.Envs.Details() {
		e := EnvOf(d, now)
		e.Node = node
		out = append(out, e)
	}
	if c == nil {
		return out, nil
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range c.Peers() {
		wg.Go(func() {
			envs, err := h.peerEnvs(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				h.cfg.Log.Warn().Err(err).Str("node", p.Node).Msg("cluster env list: a node did not answer")
				unreachable = append(unreachable, p.Node)
				return
			}
			out = append(out, envs...)
		})
	}
	wg.Wait()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	sort.Strings(unreachable)
	return out, unreachable
}

// peerEnvs is p's own env list.
func (h *Handler) peerEnvs(ctx context.Context, p Peer) ([]Env, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	resp, err := h.cfg.Cluster.Do(ctx, p.Addr, http.MethodGet, "/v1/envs")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin: node %s: HTTP %d", p.Node, resp.StatusCode)
	}
	var envs []Env
	if err := json.NewDecoder(resp.Body).Decode(&envs); err != nil {
		return nil, fmt.Errorf("admin: node %s: %w", p.Node, err)
	}
	for i := range envs {
		envs[i].Node = p.Node
	}
	return envs, nil
}

// forwarded answers r by the node that owns env, if another one does.
func (h *Handler) forwarded(w http.ResponseWriter, r *http.Request, env string) bool {
	c := h.cfg.Cluster
	if c == nil {
		return false
	}
	addr := c.OwnerAddr(env)
	if addr == "" {
		return false
	}
	c.Forward(w, r, addr)
	return true
}

// unreachableValue is the UnreachableHeader value for nodes.
func unreachableValue(nodes []string) string { return strings.Join(nodes, ", ") }
