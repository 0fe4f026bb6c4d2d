package cluster

import "hash/fnv"

// Member is a live node as its member key describes it.
type Member struct {
	Node      string `json:"node"`
	Advertise string `json:"advertise"`
	Running   int    `json:"running"`
	MaxEnvs   int    `json:"max_envs"`
	// MemAvailable is the memory the node can still give envs, in bytes
	// (lifecycle.SystemAvailableMemory); 0: not known. MinMemAvailable is
	// the node's floor (limits.min_available_memory), below which it
	// evicts envs to make room; 0: none.
	MemAvailable    int64 `json:"mem_available,omitempty"`
	MinMemAvailable int64 `json:"min_mem_available,omitempty"`
}

// hasRoom reports whether m can take one more env: it runs fewer than
// its max_envs, and its available memory, if known, is above its floor
// (a node below it would evict an env to start one, while another node
// may have room).
func (m Member) hasRoom() bool {
	if m.MaxEnvs > 0 && m.Running >= m.MaxEnvs {
		return false
	}
	return m.MinMemAvailable == 0 || m.MemAvailable == 0 || m.MemAvailable > m.MinMemAvailable
}

// Choose picks the node for env among members by rendezvous (highest
// random weight) hashing, skipping nodes without room: a name tends to
// land on the same node, and a lost node moves only its own envs. It
// returns false when no member has room.
func Choose(env string, members []Member) (Member, bool) {
	var best Member
	var bestW uint64
	found := false
	for _, m := range members {
		if !m.hasRoom() {
			continue
		}
		if w := weight(env, m.Node); !found || w > bestW || (w == bestW && m.Node < best.Node) {
			best, bestW, found = m, w, true
		}
	}
	return best, found
}

func weight(env, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(env))
	h.Write([]byte{0})
	h.Write([]byte(node))
	// FNV's low bits mix poorly for short inputs; a final avalanche
	// (splitmix64) spreads them.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
