package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/rs/zerolog"
)

// HopHeader marks a request that one gateway of a cluster forwarded to
// another; its value is the forwarding node, and HopAuthHeader proves it.
// A hop is never forwarded again (served where it lands, or refused), so
// two nodes with different views of the owners cannot bounce it between
// them; and it skips access control, which the forwarding node applied.
const HopHeader = "Envgate-Hop"

// Placer decides, in cluster mode, which node serves an env (see
// lifecycle/cluster.Node.Place): "" for this node, which then owns the
// env, or the address of the node to forward the request to. hopped says
// the request came from another node. Place must answer an env this node
// owns from memory: it is on every request's path.
type Placer interface {
	Place(ctx context.Context, env string, hopped bool) (addr string, err error)
	// OwnerAddr is the address of the live node other than this one that
	// owns env, from memory; "" if this node or nobody does.
	OwnerAddr(env string) string
	// Live reports, from memory, whether a live node other than this
	// one has the address addr: false once its session has ended.
	Live(addr string) bool
}

// forwardKey holds the forward of a request to another node.
type forwardKey struct{}

// forward is where a request goes, and what its hop tells the node.
type forward struct {
	addr       string
	showOutput bool
}

// clusterRoute forwards requests to the env's owner node.
type clusterRoute struct {
	placer Placer
	node   string // this node's name, the HopHeader value
	secret []byte // the cluster's shared secret, for HopAuthHeader
	proxy  *httputil.ReverseProxy
	log    zerolog.Logger
}

func (h *Handler) initCluster(cfg Config) error {
	if cfg.Cluster == nil {
		return nil
	}
	if len(cfg.ClusterSecret) < MinClusterSecret {
		return fmt.Errorf("gateway: cluster mode needs a shared secret of at least %d bytes (Config.ClusterSecret)", MinClusterSecret)
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		// Nodes talk to each other all the time: keep connections.
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	c := &clusterRoute{placer: cfg.Cluster, node: cfg.Node, secret: cfg.ClusterSecret, log: cfg.Log}
	c.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			f := pr.In.Context().Value(forwardKey{}).(forward)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = f.addr
			pr.Out.Host = pr.In.Host
			h.setForwarded(pr)
			SignHop(c.secret, c.node, time.Now(), f.showOutput, pr.Out)
		},
		Transport:  tr,
		BufferPool: bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.log.Warn().Err(err).Str("host", r.Host).Str("node", r.Context().Value(forwardKey{}).(forward).addr).Msg("forwarding to the owner node failed")
			(&errorPage{Status: http.StatusBadGateway, Error: "node_unreachable",
				Message: "The node running this env did not answer; retry in a moment.", RetryAfter: 2}).write(w, r)
		},
		ErrorLog: newStdLogger(h.log, "cluster-proxy"),
	}
	h.cluster = c
	return nil
}

// contextWithHop marks a context as an authenticated hop's.
func contextWithHop(ctx context.Context, hp *hop) context.Context {
	return context.WithValue(ctx, hopKey{}, hp)
}

// hop is r's authenticated hop, nil if r came from a client (or outside
// cluster mode).
func (h *Handler) hop(r *http.Request) *hop {
	if h.cluster == nil {
		return nil
	}
	return hopOf(r)
}

// hopOf is r's authenticated hop, nil if r came from a client.
func hopOf(r *http.Request) *hop {
	hp, _ := r.Context().Value(hopKey{}).(*hop)
	return hp
}

// routeCluster places env and, when another node serves it, forwards the
// request there. It reports whether it answered the request; false means
// this node owns env and serves it as a single gateway would.
func (h *Handler) routeCluster(w http.ResponseWriter, r *http.Request, env string, showOutput bool, began time.Time) bool {
	hopped := hopOf(r) != nil
	addr, err := h.cluster.placer.Place(r.Context(), env, hopped)
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(r.Context().Err(), context.Canceled) {
			status = 499
		} else {
			(&errorPage{Status: status, Error: "cluster_unavailable", Env: env,
				Message: "The cluster cannot place this env right now: " + err.Error() + ". Retry in a moment.", RetryAfter: 5}).write(w, r)
		}
		h.log.Warn().Err(err).Str("env", env).Bool("hopped", hopped).Msg("cluster placement failed")
		h.logRequest(r, env, status, began)
		return true
	}
	if addr == "" {
		return false
	}
	h.forwardTo(w, r, addr, showOutput)
	return true
}

// forwardTo proxies r to the node at addr, as a hop.
func (h *Handler) forwardTo(w http.ResponseWriter, r *http.Request, addr string, showOutput bool) {
	h.cluster.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, forward{addr, showOutput})))
}

// forwardStatus sends a start status request (StatusPath) to the node
// that owns env, if another one does: the start runs there. It reports
// whether it did.
func (h *Handler) forwardStatus(w http.ResponseWriter, r *http.Request, env string, showOutput bool) bool {
	if h.cluster == nil || hopOf(r) != nil {
		return false
	}
	addr := h.cluster.placer.OwnerAddr(env)
	if addr == "" {
		return false
	}
	h.forwardTo(w, r, addr, showOutput)
	return true
}
