package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Place decides where a request for env is served. It returns "" when
// this node serves it (it owns env, having claimed it if nobody did), or
// the advertise address of the node to forward to. hopped says the
// request was already forwarded once: it is then never sent on, only
// served here or refused with ErrElsewhere.
//
// An env this node owns is answered from the local cache, without
// touching etcd; only a claim waits for etcd, up to Config.PlaceTimeout.
func (n *Node) Place(ctx context.Context, env string, hopped bool) (string, error) {
	n.mu.RLock()
	o, owned := n.owners[env]
	live := n.session != nil
	m, alive := n.members[o.node]
	n.mu.RUnlock()
	switch {
	case owned && o.node == n.cfg.Node && live:
		return "", nil
	case owned && o.node != n.cfg.Node && alive && !hopped:
		return m.Advertise, nil
	case owned && o.node != n.cfg.Node:
		// Forwarded here already, or the owner's member key is gone and
		// its owner key will follow when its lease expires.
		return "", fmt.Errorf("%w (%s)", ErrElsewhere, o.node)
	}
	if !hopped {
		choice, ok := Choose(env, n.Members())
		if !ok {
			return "", ErrNoRoom
		}
		if choice.Node != n.cfg.Node {
			return choice.Advertise, nil
		}
	}
	node, _, err := n.claim(ctx, env)
	if err != nil {
		return "", err
	}
	if node == n.cfg.Node {
		return "", nil
	}
	if !hopped {
		n.mu.RLock()
		m, alive = n.members[node]
		n.mu.RUnlock()
		if alive {
			return m.Advertise, nil
		}
	}
	return "", fmt.Errorf("%w (%s)", ErrElsewhere, node)
}

// Members returns the live members, this node included while it has a
// session, sorted by name.
func (n *Node) Members() []Member {
	n.mu.RLock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		if m.Node == n.cfg.Node && n.session == nil {
			continue
		}
		out = append(out, m)
	}
	n.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// OwnerAddr is the advertise address of the live node other than this
// one that owns env, from the cache; "" when this node or nobody owns it.
func (n *Node) OwnerAddr(env string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	o, ok := n.owners[env]
	if !ok || o.node == n.cfg.Node {
		return ""
	}
	return n.members[o.node].Advertise
}

// Live reports, from the cache, whether a live node of the cluster
// other than this one advertises addr: false once that node's session
// has ended (it died, froze or was cut off for session_ttl), when its
// envs may be placed elsewhere.
func (n *Node) Live(addr string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, m := range n.members {
		if m.Node != n.cfg.Node && m.Advertise == addr {
			return true
		}
	}
	return false
}

// Owner returns the node owning env and its fencing token, as the local
// cache has it.
func (n *Node) Owner(env string) (node string, token int64, ok bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	o, ok := n.owners[env]
	return o.node, o.rev, ok
}

// Claim makes sure this node owns env before it starts it: from the
// cache when it does already, else by a claim in etcd (up to
// Config.PlaceTimeout). It waits for a release of env under way first,
// so that a start right after a stop claims anew. It records the token
// (the owner key's revision) as the newest on env's data dir (Fence) and
// returns it; ErrFenced means a newer owner has recorded one, ErrElsewhere
// that another node owns env, ErrUnavailable that etcd did not answer.
func (n *Node) Claim(ctx context.Context, env string) (int64, error) {
	for {
		n.mu.RLock()
		rel := n.releasing[env]
		o, owned := n.owners[env]
		live := n.session != nil
		n.mu.RUnlock()
		if rel != nil {
			select {
			case <-rel:
				continue
			case <-ctx.Done():
				return 0, fmt.Errorf("%w: the release of the previous run has not ended", ErrUnavailable)
			}
		}
		token := o.rev
		switch {
		case owned && o.node == n.cfg.Node && live:
		case owned && o.node != n.cfg.Node:
			return 0, fmt.Errorf("%w (%s)", ErrElsewhere, o.node)
		default:
			node, rev, err := n.claim(ctx, env)
			if err != nil {
				return 0, err
			}
			if node != n.cfg.Node {
				return 0, fmt.Errorf("%w (%s)", ErrElsewhere, node)
			}
			token = rev
		}
		if err := Fence(n.cfg.FenceDir, env, token); err != nil {
			if errors.Is(err, ErrFenced) {
				n.cfg.Log.Error().Err(err).Str("env", env).Msg("cluster: refusing to start a fenced env")
			}
			return 0, err
		}
		return token, nil
	}
}

// Release deletes env's owner key, if it is still this node's claim of
// token (its revision): env stopped here, and the next request places it
// afresh. It returns at once; the deletion runs in the background, and a
// Claim of env waits for it. When etcd does not answer, the key stays
// (this node still owns env, stopped) until its session ends.
func (n *Node) Release(env string, token int64) {
	n.mu.Lock()
	o, ok := n.owners[env]
	if !ok || o.node != n.cfg.Node || o.rev != token || n.releasing[env] != nil {
		n.mu.Unlock()
		return
	}
	done := make(chan struct{})
	n.releasing[env] = done
	n.mu.Unlock()
	n.wg.Go(func() {
		released := false
		defer func() {
			n.mu.Lock()
			if cur, ok := n.owners[env]; released && ok && cur.rev == token {
				delete(n.owners, env)
			}
			delete(n.releasing, env)
			close(done)
			n.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.SessionTTL)
		defer cancel()
		key := n.envKey(env)
		resp, err := n.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", token)).
			Then(clientv3.OpDelete(key)).
			Commit()
		if err != nil {
			n.cfg.Log.Warn().Err(err).Str("env", env).Msg("cluster: owner key not released; it goes with the session")
			return
		}
		released = resp.Succeeded
		n.cfg.Log.Info().Str("env", env).Int64("token", token).Bool("released", released).Msg("cluster: env stopped, owner key released")
	})
}

// claim makes this node env's owner unless another node already is, and
// returns the owner and its key's revision. The key is created only if
// absent and bound to the session's lease; its revision is the fencing
// token, recorded by Claim before the env may start here.
func (n *Node) claim(ctx context.Context, env string) (string, int64, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, n.cfg.PlaceTimeout, ErrUnavailable)
	defer cancel()
	key := n.envKey(env)
	for {
		n.mu.RLock()
		s, ready := n.session, n.ready
		n.mu.RUnlock()
		if s == nil {
			select {
			case <-ready:
				continue
			case <-ctx.Done():
				return "", 0, ErrUnavailable
			}
		}
		resp, err := n.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, n.cfg.Node, clientv3.WithLease(s.Lease()))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			if ctx.Err() != nil {
				return "", 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			select {
			case <-ctx.Done():
				return "", 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		node, rev := n.cfg.Node, resp.Header.Revision
		if !resp.Succeeded {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue // gone between the compare and the get
			}
			node, rev = string(kvs[0].Value), kvs[0].ModRevision
		}
		n.mu.Lock()
		if cur, ok := n.owners[env]; !ok || cur.rev <= rev {
			n.owners[env] = owner{node, rev}
		}
		n.mu.Unlock()
		if resp.Succeeded {
			n.cfg.Log.Info().Str("env", env).Int64("token", rev).Msg("cluster: env claimed")
		}
		return node, rev, nil
	}
}
