// Package gateway is envgate's front door: it maps each request's Host to
// an env name, acquires the env from the lifecycle manager (starting it if
// needed), and reverse-proxies the request to the env's dev server. It owns
// the listeners, the host parser, the proxy and the error pages.
//
// It rejects anything that is not exactly one valid DNS label in front of
// a configured domain before doing any other work, so a bad or hostile
// Host never creates a namespace.
//
// It never trusts a client's forwarding headers (X-Forwarded-*, Forwarded,
// X-Request-Id) unless the client is a configured trusted proxy, and it
// tracks the connections it hands over on an upgrade (WebSockets), which
// http.Server.Shutdown does not, so Handler.Shutdown can end them.
package gateway
