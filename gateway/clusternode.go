package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// NodeAPIHost is the Host of the requests one node of a cluster sends to
// another's own API (its admin API, for the envs it runs): a name no
// domain can have, so no env is ever reached by it. Such a request is
// served only as a hop signed with the cluster's secret (HopAuthHeader);
// any other gets a 404.
const NodeAPIHost = "envgate-node.invalid"

// serveNodeAPI answers a request for NodeAPIHost and reports whether r
// was one.
func (h *Handler) serveNodeAPI(w http.ResponseWriter, r *http.Request) bool {
	if h.cluster == nil || !strings.EqualFold(r.Host, NodeAPIHost) {
		return false
	}
	if h.hop(r) == nil || h.nodeAPI == nil {
		(&errorPage{Status: http.StatusNotFound, Error: "bad_host", Message: "Host " + quote(r.Host) + ": no such env."}).write(w, r)
		return true
	}
	h.nodeAPI.ServeHTTP(w, r)
	return true
}

// NodeClient sends requests to the API of other nodes of the cluster
// (NodeAPIHost), signed as hops from this node.
type NodeClient struct {
	node   string
	secret []byte
	client *http.Client
	proxy  *httputil.ReverseProxy
}

// nodeAddrKey holds the address a request is forwarded to by
// NodeClient.Forward.
type nodeAddrKey struct{}

// NewNodeClient returns a client for node (this node's name) with the
// cluster's secret.
func NewNodeClient(node string, secret []byte, log zerolog.Logger) *NodeClient {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // a restart waits for the env's start
	}
	c := &NodeClient{node: node, secret: secret, client: &http.Client{Transport: tr}}
	c.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(nodeAddrKey{}).(string)
			pr.Out.Host = NodeAPIHost
			// The hop's signature is the credential: the client's own
			// (an admin token, a dashboard login) stays here.
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
			SignHop(c.secret, c.node, time.Now(), false, pr.Out)
		},
		Transport:     tr,
		FlushInterval: -1, // logs that follow
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn().Err(err).Str("node", r.Context().Value(nodeAddrKey{}).(string)).Msg("node API unreachable")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "{\"error\":%q}\n", "the node running this env did not answer: "+err.Error())
		},
		ErrorLog: newStdLogger(log, "node-api"),
	}
	return c
}

// Do sends method target (a path and query), with the header fields of
// hdr, to the API of the node at addr.
func (c *NodeClient) Do(ctx context.Context, addr, method, target string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+target, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Host = NodeAPIHost
	SignHop(c.secret, c.node, time.Now(), false, req)
	return c.client.Do(req)
}

// Forward proxies r, an API request, to the API of the node at addr, and
// its answer back.
func (c *NodeClient) Forward(w http.ResponseWriter, r *http.Request, addr string) {
	c.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nodeAddrKey{}, addr)))
}
