package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// HopHeader marks a request that one gateway of a cluster forwarded to
// another; its value is the forwarding node. A request carrying it is
// never forwarded again (served where it lands, or refused), so two
// nodes with different views of the owners cannot bounce it between them.
const HopHeader = "Envgate-Hop"

// Placer decides, in cluster mode, which node serves an env (see
// lifecycle/cluster.Node.Place): "" for this node, which then owns the
// env, or the address of the node to forward the request to. hopped says
// the request came from another node. Place must answer an env this node
// owns from memory: it is on every request's path.
type Placer interface {
	Place(ctx context.Context, env string, hopped bool) (addr string, err error)
}

// forwardKey holds the address of the node a request is forwarded to.
type forwardKey struct{}

// clusterRoute forwards requests to the env's owner node.
type clusterRoute struct {
	placer Placer
	node   string // this node's name, the HopHeader value
	proxy  *httputil.ReverseProxy
}

func (h *Handler) initCluster(cfg Config) {
	if cfg.Cluster == nil {
		return
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
	c := &clusterRoute{placer: cfg.Cluster, node: cfg.Node}
	c.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(forwardKey{}).(string)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(HopHeader, c.node)
			h.setForwarded(pr)
		},
		Transport:  tr,
		BufferPool: bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.log.Warn().Err(err).Str("host", r.Host).Str("node", r.Context().Value(forwardKey{}).(string)).Msg("forwarding to the owner node failed")
			(&errorPage{Status: http.StatusBadGateway, Error: "node_unreachable",
				Message: "The node running this env did not answer; retry in a moment.", RetryAfter: 2}).write(w, r)
		},
		ErrorLog: newStdLogger(h.log, "cluster-proxy"),
	}
	h.cluster = c
}

// routeCluster places env and, when another node serves it, forwards the
// request there. It reports whether it answered the request; false means
// this node owns env and serves it as a single gateway would.
func (h *Handler) routeCluster(w http.ResponseWriter, r *http.Request, env string, began time.Time) bool {
	hopped := r.Header.Get(HopHeader) != ""
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
		r.Header.Del(HopHeader) // the dev server need not see it
		return false
	}
	h.cluster.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, addr)))
	return true
}
