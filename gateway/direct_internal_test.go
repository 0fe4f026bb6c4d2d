package gateway

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/envgate/envgate/lifecycle"
)

func TestDirectEligible(t *testing.T) {
	get := func(target string) *http.Request {
		r, err := http.ReadRequest(bufioReader("GET " + target + " HTTP/1.1\r\nHost: x.localhost\r\nAccept: */*\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name string
		req  func() *http.Request
		want bool
	}{
		{"plain GET", func() *http.Request { return get("/a?b=c") }, true},
		{"HEAD", func() *http.Request { r := get("/"); r.Method = "HEAD"; return r }, true},
		{"body", func() *http.Request {
			r, _ := http.ReadRequest(bufioReader("POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 2\r\n\r\nhi"))
			return r
		}, false},
		{"chunked body", func() *http.Request {
			r, _ := http.ReadRequest(bufioReader("POST / HTTP/1.1\r\nHost: x.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
			return r
		}, false},
		{"upgrade", func() *http.Request {
			r := get("/ws")
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			return r
		}, false},
		{"absolute-form target", func() *http.Request { return get("http://x.localhost/a") }, false},
		{"asterisk", func() *http.Request { r := get("/"); r.Method = "OPTIONS"; r.RequestURI = "*"; return r }, false},
		{"non-ASCII target", func() *http.Request { r := get("/"); r.RequestURI = "/caf\xc3\xa9"; return r }, false},
		{"CONNECT", func() *http.Request { r := get("/"); r.Method = "CONNECT"; return r }, false},
		{"non-canonical field", func() *http.Request { r := get("/"); r.Header["x-lower"] = []string{"v"}; return r }, false},
		{"field value with CR", func() *http.Request { r := get("/"); r.Header["X-Bad"] = []string{"a\rb"}; return r }, false},
		{"field name with a space", func() *http.Request { r := get("/"); r.Header["X y"] = []string{"v"}; return r }, false},
		{"POST without a body", func() *http.Request {
			r, _ := http.ReadRequest(bufioReader("POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 0\r\n\r\n"))
			return r
		}, true},
		{"no Host", func() *http.Request { r := get("/"); r.Host = ""; return r }, false},
		// An HTTP/2 request always has a Body; its ContentLength tells.
		{"HTTP/2, stream ended", func() *http.Request {
			r := get("/")
			r.ProtoMajor, r.Body = 2, io.NopCloser(strings.NewReader(""))
			return r
		}, true},
		{"HTTP/2 with a body", func() *http.Request {
			r := get("/")
			r.ProtoMajor, r.Body, r.ContentLength = 2, io.NopCloser(strings.NewReader("x")), -1
			return r
		}, false},
	}
	for _, tt := range tests {
		if got := directEligible(tt.req()); got != tt.want {
			t.Errorf("%s: directEligible = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRoute: the one choice of the way to an env, from the upstream
// protocol its template's settings name.
func TestRoute(t *testing.T) {
	settings := TemplateSettings{"grpc": {Upstream: UpstreamH2C}, "web": {Upstream: UpstreamHTTP}, "page": {Waiting: WaitBlock}}
	web, grpc := &lifecycle.Template{Name: "web"}, &lifecycle.Template{Name: "grpc"}
	page, unlisted := &lifecycle.Template{Name: "page"}, &lifecycle.Template{Name: "other"}
	req := func(s string) *http.Request {
		r, err := http.ReadRequest(bufioReader(s))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	get := "GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\n"
	post := "POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 2\r\n\r\nhi"
	upgrade := "GET / HTTP/1.1\r\nHost: x.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	for _, tt := range []struct {
		name string
		tmpl *lifecycle.Template
		req  string
		want via
	}{
		{"GET", web, get, viaDirect},
		{"GET, no template", nil, get, viaDirect},
		{"GET, template without settings", unlisted, get, viaDirect},
		{"GET, template with other settings", page, get, viaDirect},
		{"POST", web, post, viaH1},
		{"upgrade", web, upgrade, viaH1},
		{"GET to h2c", grpc, get, viaH2C},
		{"POST to h2c", grpc, post, viaH2C},
		{"upgrade to h2c", grpc, upgrade, viaH1},
	} {
		if got := route(settings.of(tt.tmpl).Upstream, req(tt.req)); got != tt.want {
			t.Errorf("%s: route = %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := TemplateSettings(nil).of(grpc); got != (EnvSettings{}) {
		t.Errorf("no settings at all: %+v, want the defaults", got)
	}
}

func TestStreaming(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream":                true,
		"Text/Event-Stream; charset=utf-8": true,
		"text/event-streams":               false,
		"text/html":                        false,
		"":                                 false,
	} {
		res := &http.Response{ContentLength: 10, Header: http.Header{"Content-Type": {ct}}}
		if got := streaming(res); got != want {
			t.Errorf("Content-Type %q: streaming = %v, want %v", ct, got, want)
		}
	}
	if !streaming(&http.Response{ContentLength: -1, Header: http.Header{}}) {
		t.Error("unknown length: streaming = false, want true")
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
