package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Errors Place returns; the gateway answers each with a 503 and
// Retry-After.
var (
	// ErrUnavailable means etcd could not be reached in time to place an
	// env (or this node has no session yet).
	ErrUnavailable = errors.New("cluster: etcd unavailable, cannot place the env now")
	// ErrNoRoom means no live node has room for another env.
	ErrNoRoom = errors.New("cluster: no node has room for another env")
	// ErrElsewhere means the env runs on another node and the request has
	// already been forwarded once.
	ErrElsewhere = errors.New("cluster: env is owned by another node")
)

// owner is who holds an env's owner key, and the key's revision (the
// fencing token).
type owner struct {
	node string
	rev  int64
}

// Node is this gateway's membership in the cluster.
type Node struct {
	cfg    Config
	cli    *clientv3.Client
	prefix string // /envgate/<name>/

	mu sync.RWMutex
	// Guarded by mu: the live members and env owners, as the watch last
	// reported them; the current session (nil while there is none) and
	// ready, closed when a session exists.
	members map[string]Member
	owners  map[string]owner
	session *concurrency.Session
	ready   chan struct{}
	// releasing holds, per env, the release of this node's owner key
	// under way (closed when it ends); guarded by mu. A claim of the env
	// waits for it, and its deletion is no loss.
	releasing map[string]chan struct{}

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// handedOff: the session's lease went to the next gateway process
	// (HandOff); Close must not revoke it.
	handedOff atomic.Bool
	// inherited is the lease taken over from the previous gateway process
	// (Config.InheritLease), which Close leaves alive until TakenOver:
	// a new process that fails before it took the envs over must not end
	// the session the old one still serves them under.
	inherited clientv3.LeaseID
	takenOver atomic.Bool
}

// New connects (lazily) to etcd; Start begins the membership.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  tc,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    cfg.SessionTTL / 3,
		DialKeepAliveTimeout: cfg.SessionTTL / 3,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: after
		// an outage of etcd, the node would stay away long enough to
		// lose its session. Retry every few seconds at most instead.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Node{
		cfg:       cfg,
		cli:       cli,
		prefix:    "/envgate/" + cfg.Name + "/",
		members:   map[string]Member{},
		owners:    map[string]owner{},
		ready:     make(chan struct{}),
		releasing: map[string]chan struct{}{},
		ctx:       ctx,
		cancel:    cancel,
	}, nil
}

// Start runs the membership in the background until Close: a session,
// the member key, the watch; a new session whenever one ends.
func (n *Node) Start() {
	n.wg.Go(func() { n.run(n.ctx) })
}

// Close ends the session (its owner keys go with it, so call it after
// the envs have stopped) and the etcd client.
func (n *Node) Close() error {
	n.cancel()
	n.wg.Wait()
	return n.cli.Close()
}

// Lease is the current session's lease, 0 while there is none: what the
// next gateway process of a restart in place inherits (InheritLease).
func (n *Node) Lease() int64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.session == nil {
		return 0
	}
	return int64(n.session.Lease())
}

// TakenOver says this process has taken the envs of the one it inherited
// its lease from over (the other ends now): Close may end the session.
func (n *Node) TakenOver() { n.takenOver.Store(true) }

// HandOff says the next gateway process, which took the envs over, keeps
// the session's lease: Close then leaves it, and with it this node's
// owner keys, alive.
func (n *Node) HandOff() { n.handedOff.Store(true) }

// Client is the etcd client, for tests and the admin view.
func (n *Node) Client() *clientv3.Client { return n.cli }

func (n *Node) memberKey(node string) string { return n.prefix + "nodes/" + node }
func (n *Node) envKey(env string) string     { return n.prefix + "envs/" + env }

func (n *Node) run(ctx context.Context) {
	var stale clientv3.LeaseID // a lease given up on while etcd was away
	for ctx.Err() == nil {
		if stale != 0 {
			// Its owner keys would route requests here until it
			// expires; revoke it once etcd answers again.
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if _, err := n.cli.Revoke(rctx, stale); err == nil || rctx.Err() == nil {
				stale = 0
			}
			cancel()
		}
		err := n.runSession(ctx, &stale)
		if ctx.Err() != nil {
			return
		}
		n.cfg.Log.Warn().Err(err).Msg("cluster session ended; registering again")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// runSession holds one session: it registers, loads the members and
// owners, follows the watch, and returns when the session ends. A
// session it gives up on while its lease may still live is left in
// *stale.
func (n *Node) runSession(ctx context.Context, stale *clientv3.LeaseID) error {
	ttl := max(int(n.cfg.SessionTTL/time.Second), 1)
	var leaseID clientv3.LeaseID
	if id := clientv3.LeaseID(n.cfg.InheritLease); id != 0 {
		n.cfg.InheritLease = 0 // the first session only
		if r, err := n.cli.TimeToLive(ctx, id); err == nil && r.TTL > 0 {
			leaseID = id
			n.inherited = id
			n.cfg.Log.Info().Int64("lease", int64(id)).Msg("cluster: keeping the session of the gateway process this one took over from")
		}
	}
	if leaseID == 0 {
		lease, err := n.cli.Grant(ctx, int64(ttl))
		if err != nil {
			return fmt.Errorf("cluster: session: %w", err)
		}
		leaseID = lease.ID
	}
	s, err := concurrency.NewSession(n.cli, concurrency.WithLease(leaseID), concurrency.WithContext(ctx))
	if err != nil {
		*stale = leaseID
		return fmt.Errorf("cluster: session: %w", err)
	}
	// The session's Done fires only when the client's own view of the
	// lease has run out, which is about when etcd expires it and another
	// node may claim this node's envs. Follow the keepalives too, and
	// stop the envs while a third of the TTL is left.
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	kach, err := n.cli.KeepAlive(kctx, leaseID)
	if err != nil {
		s.Orphan()
		*stale = leaseID
		return fmt.Errorf("cluster: keepalive: %w", err)
	}
	defer func() {
		if ctx.Err() != nil && !n.handedOff.Load() && (leaseID != n.inherited || n.takenOver.Load()) {
			// A clean shutdown: revoke at once, so that the others
			// place this node's envs without waiting out the TTL.
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n.cli.Revoke(cctx, s.Lease())
		}
	}()
	if _, err := n.publish(ctx, s, Member{Running: -1}); err != nil {
		return err
	}
	rev, err := n.load(ctx)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.session = s
	close(n.ready)
	n.mu.Unlock()
	n.cfg.Log.Info().Str("node", n.cfg.Node).Int64("lease", int64(s.Lease())).Msg("cluster member registered")

	// The guard and the publisher run beside the watch loop, which may
	// wait on etcd (a load after the watch failed): nothing may delay
	// the guard.
	sctx, scancel := context.WithCancelCause(ctx)
	var sg sync.WaitGroup
	defer sg.Wait()
	defer scancel(nil)
	fenceAfter := n.cfg.SessionTTL * 2 / 3
	sg.Go(func() { n.guard(sctx, scancel, kach, fenceAfter) })
	sg.Go(func() { n.publishLoop(sctx, s) })

	wch := n.cli.Watch(clientv3.WithRequireLeader(sctx), n.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-sctx.Done():
			if ctx.Err() != nil {
				n.endSession(false)
				return ctx.Err()
			}
			s.Orphan()
			*stale = s.Lease()
			return context.Cause(sctx)
		case <-s.Done():
			n.endSession(true)
			return errors.New("cluster: session lost (lease expired or etcd unreachable for session_ttl)")
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				// Compacted, or no leader: load afresh and watch again.
				if rev, err = n.load(sctx); err != nil {
					select {
					case <-sctx.Done():
					case <-time.After(500 * time.Millisecond):
					}
					continue
				}
				// The old watch has ended (its channel closes after an
				// error), so sctx can carry the new one.
				wch = n.cli.Watch(clientv3.WithRequireLeader(sctx), n.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
				continue
			}
			n.apply(wr.Events)
		}
	}
}

// guard stops this node's envs, and ends the session through cancel,
// when no keepalive has been answered for fenceAfter: etcd may then
// expire the lease soon and let another node claim the envs, which must
// have stopped here by then. The session's own Done fires only when the
// client's view of the lease has run out, about when etcd expires it:
// too late to stop first.
func (n *Node) guard(ctx context.Context, cancel context.CancelCauseFunc, kach <-chan *clientv3.LeaseKeepAliveResponse, fenceAfter time.Duration) {
	t := time.NewTimer(fenceAfter)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-kach:
			if !ok {
				kach = nil // the session's Done follows
				continue
			}
			t.Reset(fenceAfter)
		case <-t.C:
			n.endSession(true)
			cancel(fmt.Errorf("cluster: no keepalive answered for %v (session_ttl %v); envs stopped before the lease can expire", fenceAfter, n.cfg.SessionTTL))
			return
		}
	}
}

// publishLoop keeps the member key's capacity current.
func (n *Node) publishLoop(ctx context.Context, s *concurrency.Session) {
	t := time.NewTicker(max(n.cfg.SessionTTL/3, time.Second))
	defer t.Stop()
	last := Member{Running: -1}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m, err := n.publish(ctx, s, last); err == nil {
				last = m
			}
		}
	}
}

// publish puts this node's member key when its capacity changed from
// last, what it published before.
func (n *Node) publish(ctx context.Context, s *concurrency.Session, last Member) (Member, error) {
	m := n.member()
	if !capacityMoved(last, m) {
		return last, nil
	}
	b, _ := json.Marshal(m)
	pctx, cancel := context.WithTimeout(ctx, n.cfg.SessionTTL)
	defer cancel()
	if _, err := n.cli.Put(pctx, n.memberKey(n.cfg.Node), string(b), clientv3.WithLease(s.Lease())); err != nil {
		return last, fmt.Errorf("cluster: register: %w", err)
	}
	return m, nil
}

// member is this node's member record now.
func (n *Node) member() Member {
	m := Member{Node: n.cfg.Node, Advertise: n.cfg.Advertise, MaxEnvs: n.cfg.MaxEnvs, Running: n.running(),
		MinMemAvailable: n.cfg.MinMemAvailable}
	if n.cfg.MemAvailable != nil {
		m.MemAvailable = n.cfg.MemAvailable()
	}
	return m
}

// capacityMoved reports whether now is worth a write to etcd over last:
// the running envs changed, the node crossed its memory floor, or its
// available memory moved by more than a sixteenth (memory moves all the
// time; placement needs only its rough size).
func capacityMoved(last, now Member) bool {
	if now.Running != last.Running || now.hasRoom() != last.hasRoom() {
		return true
	}
	d := now.MemAvailable - last.MemAvailable
	return d != 0 && (last.MemAvailable == 0 || max(d, -d) > last.MemAvailable/16)
}

func (n *Node) running() int {
	if n.cfg.Local != nil {
		return len(n.cfg.Local())
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	c := 0
	for _, o := range n.owners {
		if o.node == n.cfg.Node {
			c++
		}
	}
	return c
}

// load replaces the cache with etcd's members and owners and returns the
// revision they were read at.
func (n *Node) load(ctx context.Context) (int64, error) {
	gctx, cancel := context.WithTimeout(ctx, n.cfg.SessionTTL)
	defer cancel()
	resp, err := n.cli.Get(gctx, n.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cluster: load: %w", err)
	}
	members, owners := map[string]Member{}, map[string]owner{}
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), n.prefix)
		if node, ok := strings.CutPrefix(k, "nodes/"); ok {
			var m Member
			if json.Unmarshal(kv.Value, &m) == nil {
				members[node] = m
			}
		} else if env, ok := strings.CutPrefix(k, "envs/"); ok {
			owners[env] = owner{string(kv.Value), kv.ModRevision}
		}
	}
	rev := resp.Header.Revision
	var local []string
	if n.cfg.Local != nil {
		local = n.cfg.Local()
	}
	n.mu.Lock()
	for env, o := range n.owners {
		if o.rev > rev {
			owners[env] = o // claimed after the read: newer than it
		}
	}
	var lost []string
	for env, o := range n.owners {
		if o.node == n.cfg.Node && owners[env].node != n.cfg.Node && n.releasing[env] == nil {
			lost = append(lost, env)
		}
	}
	for _, env := range local {
		if o, ok := n.owners[env]; owners[env].node != n.cfg.Node && (!ok || o.node != n.cfg.Node) && n.releasing[env] == nil {
			lost = append(lost, env)
		}
	}
	n.members, n.owners = members, owners
	n.mu.Unlock()
	n.lose(lost)
	return rev, nil
}

// apply updates the cache from watch events. An env this node owned that
// now has another owner, or none, is lost.
func (n *Node) apply(evs []*clientv3.Event) {
	var lost []string
	n.mu.Lock()
	for _, ev := range evs {
		k := strings.TrimPrefix(string(ev.Kv.Key), n.prefix)
		put := ev.Type == clientv3.EventTypePut
		if node, ok := strings.CutPrefix(k, "nodes/"); ok {
			var m Member
			if put && json.Unmarshal(ev.Kv.Value, &m) == nil {
				n.members[node] = m
			} else {
				delete(n.members, node)
			}
			continue
		}
		env, ok := strings.CutPrefix(k, "envs/")
		if !ok {
			continue
		}
		was, known := n.owners[env]
		if known && was.rev >= ev.Kv.ModRevision {
			// A claim of this node, newer than the event, is in the
			// cache already (the event is a release it waited for).
			continue
		}
		if put {
			n.owners[env] = owner{string(ev.Kv.Value), ev.Kv.ModRevision}
		} else {
			delete(n.owners, env)
		}
		if was.node == n.cfg.Node && n.owners[env].node != n.cfg.Node && n.releasing[env] == nil {
			lost = append(lost, env)
		}
	}
	n.mu.Unlock()
	n.lose(lost)
}

// endSession forgets the session; when it was lost (not closed), every
// env this node owned is stopped: its keys expire with the lease, and
// another node may start them.
func (n *Node) endSession(lost bool) {
	var envs []string
	n.mu.Lock()
	n.session = nil
	n.ready = make(chan struct{})
	if lost {
		for env, o := range n.owners {
			if o.node == n.cfg.Node {
				envs = append(envs, env)
				delete(n.owners, env)
			}
		}
		delete(n.members, n.cfg.Node)
	}
	n.mu.Unlock()
	n.lose(envs)
}

func (n *Node) lose(envs []string) {
	if len(envs) == 0 {
		return
	}
	n.cfg.Log.Warn().Strs("envs", envs).Msg("cluster: envs no longer owned here; stopping them")
	n.wg.Go(func() { n.cfg.Lost(envs) })
}
