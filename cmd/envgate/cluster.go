package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/rs/zerolog"
)

// clusterMode is this gateway's part in the cluster of cfg.Cluster: a
// session, the member key, a watch of members and owners. Envs this node
// loses (its session ended, or another node owns them now) are stopped
// at once; each start claims its env and each stop releases it.
type clusterMode struct {
	node *cluster.Node
	envs atomic.Pointer[lifecycle.Manager] // set by start
	log  zerolog.Logger
	// fenceDir is where the fencing tokens are recorded.
	fenceDir string
	// hopSecret signs the requests nodes forward to each other.
	hopSecret []byte
	name      string // this node's
	peers     *gateway.NodeClient
}

// newCluster makes the node of cfg.Cluster, not yet started; nil outside
// cluster mode. Close it.
func newCluster(cfg *Config, inheritLease int64, log zerolog.Logger) (*clusterMode, error) {
	if cfg.Cluster == nil {
		return nil, nil
	}
	secret, err := cfg.readClusterSecret()
	if err != nil {
		return nil, err
	}
	c := &clusterMode{log: log.With().Str("component", "cluster").Logger(), hopSecret: secret}
	lost := func(names []string) {
		envs := c.envs.Load()
		for _, name := range names {
			if envs != nil && envs.Stop(name, "cluster: no longer owned by this node") {
				c.log.Warn().Str("env", name).Msg("stopped an env this node no longer owns")
			}
		}
	}
	ccfg := cfg.clusterConfig(lost, c.log)
	// A restart in place keeps the session, and so the owner keys and
	// fencing tokens, of the envs it takes over.
	ccfg.InheritLease = inheritLease
	ccfg.Local = func() []string {
		envs := c.envs.Load()
		if envs == nil {
			return nil
		}
		var names []string
		for _, e := range envs.List() {
			if e.State == lifecycle.Starting || e.State == lifecycle.Ready {
				names = append(names, e.Name)
			}
		}
		return names
	}
	c.fenceDir = ccfg.FenceDir
	c.name = cfg.Cluster.Node
	c.peers = gateway.NewNodeClient(c.name, secret, c.log)
	node, err := cluster.New(ccfg)
	if err != nil {
		return nil, err
	}
	c.node = node
	return c, nil
}

// ownership is what the lifecycle claims envs through: nil outside
// cluster mode.
func (c *clusterMode) ownership() lifecycle.Ownership {
	if c == nil {
		return nil
	}
	return c
}

// placer is what the gateway places envs through: nil outside cluster
// mode.
func (c *clusterMode) placer() gateway.Placer {
	if c == nil {
		return nil
	}
	return c.node
}

// secret is the secret hops are signed with: nil outside cluster mode.
func (c *clusterMode) secret() []byte {
	if c == nil {
		return nil
	}
	return c.hopSecret
}

// start joins the cluster, after the recovery of adopted envs, so that
// those another node owns now are stopped.
func (c *clusterMode) start(cfg *Config, envs *lifecycle.Manager) {
	c.envs.Store(envs)
	c.node.Start()
	c.log.Info().Str("node", cfg.Cluster.Node).Str("advertise", cfg.Cluster.Advertise).Strs("etcd", cfg.Cluster.Etcd.Endpoints).Msg("cluster mode")
}

// lease is the session's lease for the next gateway process of a restart
// in place; 0 outside cluster mode.
func (c *clusterMode) lease() int64 {
	if c == nil {
		return 0
	}
	return c.node.Lease()
}

// takenOver says this process took its predecessor's envs over: the
// session it inherited is its own to end.
func (c *clusterMode) takenOver() {
	if c != nil {
		c.node.TakenOver()
	}
}

// handOff says the next gateway process took the session over: Close
// leaves it alive.
func (c *clusterMode) handOff() {
	if c != nil {
		c.node.HandOff()
	}
}

// Close ends the session; this node's owner keys go with it (unless
// handed off).
func (c *clusterMode) Close() error {
	if c == nil {
		return nil
	}
	return c.node.Close()
}

// Claim implements lifecycle.Ownership.
func (c *clusterMode) Claim(ctx context.Context, env string) (lifecycle.Fence, error) {
	token, err := c.node.Claim(ctx, env)
	if err != nil {
		return lifecycle.Fence{}, err
	}
	return lifecycle.Fence{Dir: c.fenceDir, Token: token}, nil
}

// Release implements lifecycle.Ownership.
func (c *clusterMode) Release(env string, token int64) { c.node.Release(env, token) }

// admin is the admin API's view of the cluster: nil outside cluster
// mode.
func (c *clusterMode) admin() admin.Cluster {
	if c == nil {
		return nil
	}
	return clusterAdmin{c}
}

// nodeAPI is what this node answers the other nodes' API requests with:
// the admin API for its own envs only (see admin.Cluster), and POST
// syncPath, another node's webhook: fetch now. Nil outside cluster mode.
//
// And POST evictPath/<env>: another node destroyed env, and removed its
// certificate from the shared storage; this node drops its cached copy.
func (c *clusterMode) nodeAPI(cfg *Config, envs *lifecycle.Manager, pv *previews, remains *envRemains, log zerolog.Logger) http.Handler {
	if c == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/", dashboardHandler(cfg, envs, nil, log))
	mux.HandleFunc("POST "+syncPath, func(w http.ResponseWriter, r *http.Request) {
		if pv.git != nil {
			log.Info().Str("from", r.Header.Get(gateway.HopHeader)).Msg("another node got a webhook: fetching")
			pv.syncRelayed()
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("POST "+evictPath+"{env}", func(w http.ResponseWriter, r *http.Request) {
		if cm := remains.certs.Load(); cm != nil {
			if err := cm.Evict(r.PathValue("env")); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			log.Debug().Str("env", r.PathValue("env")).Str("from", r.Header.Get(gateway.HopHeader)).Msg("another node destroyed an env: its certificate dropped from memory")
		}
		w.WriteHeader(http.StatusAccepted)
	})
	return mux
}

// syncPath is the node API's path for another node's webhook; evictPath
// the prefix of its path for an env another node destroyed.
const (
	syncPath  = "/v1/cluster/sync"
	evictPath = "/v1/cluster/evict/"
)

// usePreviews lets pv's webhooks act cluster-wide.
func (c *clusterMode) usePreviews(pv *previews) {
	if c != nil && pv != nil && pv.git != nil {
		pv.cluster = c
	}
}

// SyncOthers implements previewsCluster.
func (c *clusterMode) SyncOthers() {
	c.postOthers(syncPath, "webhook not passed on to a node: it sees the change at its next fetch")
}

// evictOthers tells every other node that this one destroyed env: they
// drop its certificate from memory (the stored one is gone).
func (c *clusterMode) evictOthers(env string) {
	c.postOthers(evictPath+env, "a node not told of a destroyed env: it serves the env's certificate from memory until it is due for renewal or the node restarts")
}

// postOthers POSTs path to every other node's API at once, and waits
// for their answers (10 s at most); failures are logged with failed.
func (c *clusterMode) postOthers(path, failed string) {
	var wg sync.WaitGroup
	for _, p := range (clusterAdmin{c}).Peers() {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.peers.Do(ctx, p.Addr, http.MethodPost, path, nil)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					err = fmt.Errorf("HTTP %d", resp.StatusCode)
				}
			}
			if err != nil {
				c.log.Warn().Err(err).Str("node", p.Node).Str("path", path).Msg(failed)
			}
		})
	}
	wg.Wait()
}

// DestroyRemote implements previewsCluster.
func (c *clusterMode) DestroyRemote(env string) (bool, error) {
	addr := c.node.OwnerAddr(env)
	if addr == "" {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := c.peers.Do(ctx, addr, http.MethodPost, admin.EnvPath(env, "/destroy"), http.Header{admin.ActionHeader: {"1"}})
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return false, fmt.Errorf("cluster: destroy %s on %s: HTTP %d: %s", env, addr, resp.StatusCode, bytes.TrimSpace(b))
	}
	return true, nil
}

// clusterAdmin implements admin.Cluster.
type clusterAdmin struct{ c *clusterMode }

func (a clusterAdmin) Node() string { return a.c.name }

func (a clusterAdmin) Peers() []admin.Peer {
	var out []admin.Peer
	for _, m := range a.c.node.Members() {
		if m.Node != a.c.name {
			out = append(out, admin.Peer{Node: m.Node, Addr: m.Advertise})
		}
	}
	return out
}

func (a clusterAdmin) OwnerAddr(env string) string { return a.c.node.OwnerAddr(env) }

func (a clusterAdmin) Do(ctx context.Context, addr, method, target string) (*http.Response, error) {
	return a.c.peers.Do(ctx, addr, method, target, nil)
}

func (a clusterAdmin) Forward(w http.ResponseWriter, r *http.Request, addr string) {
	a.c.peers.Forward(w, r, addr)
}
