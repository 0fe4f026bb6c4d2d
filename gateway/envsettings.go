package gateway

import "github.com/envgate/envgate/lifecycle"

// Waiting is what a browser navigation sees while its env starts.
type Waiting string

// Values of EnvSettings.Waiting (config: templates[].waiting).
const (
	// WaitPage shows browsers a page that follows the start and reloads
	// when the env is ready; other clients wait. The default ("" too).
	WaitPage Waiting = "page"
	// WaitBlock makes every request, browser navigations included, wait
	// for the start.
	WaitBlock Waiting = "block"
)

// Upstream is the protocol the gateway speaks to an env's dev server.
type Upstream string

// Values of EnvSettings.Upstream (config: templates[].upstream).
const (
	// UpstreamHTTP is HTTP/1.1 to the dev server. The default ("" too).
	UpstreamHTTP Upstream = "http"
	// UpstreamH2C is HTTP/2 without TLS (prior knowledge) to the dev
	// server, as gRPC servers speak it.
	UpstreamH2C Upstream = "h2c"
)

// EnvSettings are the gateway's settings for the envs of one template:
// how it waits for them, talks to them and scopes their cookies. The
// lifecycle runs the template; these keys of it are the gateway's alone.
// The zero value is the defaults.
type EnvSettings struct {
	// Waiting: WaitPage (default) or WaitBlock.
	Waiting Waiting
	// Upstream: UpstreamHTTP (default) or UpstreamH2C (gRPC).
	Upstream Upstream
	// SharedDomainCookies lets the dev server set cookies for the shared
	// domain (Domain=.<domain>), which reach every other env. Default
	// false: the gateway makes such cookies host-only (cookies.go).
	SharedDomainCookies bool
}

// TemplateSettings are the EnvSettings of each template, by template
// name (lifecycle.Template.Name). A template it does not name, and an env
// whose template is unknown, get the zero EnvSettings: the defaults.
type TemplateSettings map[string]EnvSettings

// of returns the settings of the envs that template t runs; t may be nil.
func (s TemplateSettings) of(t *lifecycle.Template) EnvSettings {
	if t == nil || len(s) == 0 {
		return EnvSettings{}
	}
	return s[t.Name]
}
